# Teacher fine-tuning (the e6d6 variant) and re-fine-tuning of layer-pruned models.


rule finetune:
    input:
        unpack(teacher_inputs),
    output:
        model_sidecar("{size}", "{dataset}", TEACHER),
    params:
        launch=lambda wc: launcher(wc.size),
        model=teacher_model_flags,
        settings=settings_json(CFG.finetune),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, TEACHER, "finetune"),
        out=lambda wc: model_dir(wc.size, wc.dataset, TEACHER),
        code=code("finetune"),
    log:
        f"{LOGS}/finetune/{{size}}/{{dataset}}/e6d6.log",
    benchmark:
        f"{BENCHMARKS}/finetune/{{size}}/{{dataset}}/e6d6.tsv",
    retries: CFG.retries
    # the teacher runs alone (every later job needs it): on a CPU it gets every core
    threads: lambda wc: workflow.cores if res(wc.size, "gpu") == 0 else 1
    resources:
        gpu=lambda wc: res(wc.size, "gpu") * res(wc.size, "gpus_per_job"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=lambda wc: res(wc.size, "runtime"),
        cpus_per_task=lambda wc: res(wc.size, "cpus_per_task"),
        batch_divisor=batch_divisor,
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} asymprune.finetune {params.model}"
        " --train-file {input.train:q} --validation-file {input.validation:q}"
        " --settings {params.settings:q} --config-key finetune"
        " --batch-divisor {resources.batch_divisor}"
        " --checkpoint-dir {params.ckpt:q} --output {params.out:q} > {log:q} 2>&1"


rule refinetune:
    input:
        pruned=pruned_sidecar("{size}", "{dataset}", "{pvariant}"),
        **train_inputs("{dataset}"),
    output:
        model_sidecar("{size}", "{dataset}", "{pvariant}"),
    params:
        launch=lambda wc: launcher(wc.size),
        settings=settings_json(CFG.refinetune),
        pruned=lambda wc: pruned_dir(wc.size, wc.dataset, wc.pvariant),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, wc.pvariant, "refinetune"),
        out=lambda wc: model_dir(wc.size, wc.dataset, wc.pvariant),
        code=code("finetune"),
    log:
        f"{LOGS}/refinetune/{{size}}/{{dataset}}/{{pvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/refinetune/{{size}}/{{dataset}}/{{pvariant}}.tsv",
    retries: CFG.retries
    threads: 1
    resources:
        gpu=lambda wc: res(wc.size, "gpu") * res(wc.size, "gpus_per_job"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=lambda wc: res(wc.size, "runtime"),
        cpus_per_task=lambda wc: res(wc.size, "cpus_per_task"),
        batch_divisor=batch_divisor,
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} asymprune.finetune --model {params.pruned:q}"
        " --train-file {input.train:q} --validation-file {input.validation:q}"
        " --settings {params.settings:q} --config-key refinetune"
        " --batch-divisor {resources.batch_divisor}"
        " --checkpoint-dir {params.ckpt:q} --output {params.out:q} > {log:q} 2>&1"
