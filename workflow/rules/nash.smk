# NASH (Ko et al.): shallow decoder (uniform block selection) + narrow encoder (L0 gates on
# heads and FFN units, Lagrangian sparsity target), trained with KL + hidden-state
# distillation from the teacher, physically pruned; then fine-tuned like every other variant.
# The same two rules train the equal-budget baselines e{E}d{D}-{kd|ce} (config `baselines`):
# the depth variant's blocks, no gates, NASH's steps and its final fine-tune. A NASH variant
# whose id ends in -rel trains with the released code's protocol (nash.released, docs/nash.md).


rule nash:
    input:
        teacher=f"{RESULTS}/models/{{size}}/{{dataset}}/e6d6/model/sidecar.json",
        train=f"{RESULTS}/data/{{dataset}}/train.jsonl",
        validation=f"{RESULTS}/data/{{dataset}}/validation.jsonl",
    output:
        f"{RESULTS}/models/{{size}}/{{dataset}}/{{nvariant}}/pruned/sidecar.json",
    params:
        launch=lambda wc: launcher(wc.size),
        teacher=lambda wc: model_dir(wc.size, wc.dataset, "e6d6"),
        # a -rel variant trains with the released code's protocol (its own settings block)
        settings=lambda wc: settings_json(CFG.nash_train_released
                                          if variants.protocol(wc.nvariant) == "released"
                                          else CFG.nash_train),
        # a baseline keeps its depth variant's blocks, chosen as for the re-fine-tuned twin
        key=lambda wc: ("nash.released.train" if variants.protocol(wc.nvariant) == "released"
                        else "nash.train"),
        selection=lambda wc: ("" if wc.nvariant.startswith("nash-") else
                              shlex.join(["--layer-selection", config["layer_selection"]])),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, wc.nvariant, "nash"),
        out=lambda wc, output: os.path.dirname(output[0]),
        code=code("nash"),
    log:
        f"{LOGS}/nash/{{size}}/{{dataset}}/{{nvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/nash/{{size}}/{{dataset}}/{{nvariant}}.tsv",
    retries: config["execution"]["retries"]
    threads: 1
    resources:
        # the launcher runs gpus_per_job processes (DDP), one GPU each
        gpu=lambda wc: res(wc.size, "gpu") * res(wc.size, "gpus_per_job"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=lambda wc: res(wc.size, "runtime"),
        cpus_per_task=lambda wc: res(wc.size, "cpus_per_task"),
        batch_divisor=batch_divisor,
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} asymprune.nash --teacher {params.teacher:q}"
        " --variant {wildcards.nvariant} {params.selection} --train-file {input.train:q}"
        " --validation-file {input.validation:q}"
        " --settings {params.settings:q} --config-key {params.key}"
        " --batch-divisor {resources.batch_divisor}"
        " --checkpoint-dir {params.ckpt:q} --output {params.out:q} > {log:q} 2>&1"


rule nash_finetune:
    input:
        pruned=f"{RESULTS}/models/{{size}}/{{dataset}}/{{nvariant}}/pruned/sidecar.json",
        train=f"{RESULTS}/data/{{dataset}}/train.jsonl",
        validation=f"{RESULTS}/data/{{dataset}}/validation.jsonl",
    output:
        f"{RESULTS}/models/{{size}}/{{dataset}}/{{nvariant}}/model/sidecar.json",
    params:
        launch=lambda wc: launcher(wc.size),
        settings=lambda wc: settings_json(CFG.nash_finetune_released
                                          if variants.protocol(wc.nvariant) == "released"
                                          else CFG.nash_finetune),
        key=lambda wc: ("nash.released.finetune" if variants.protocol(wc.nvariant) == "released"
                        else "nash.finetune"),
        pruned=lambda wc, input: os.path.dirname(input.pruned),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, wc.nvariant, "finetune"),
        out=lambda wc, output: os.path.dirname(output[0]),
        code=code("finetune"),
    log:
        f"{LOGS}/nash_finetune/{{size}}/{{dataset}}/{{nvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/nash_finetune/{{size}}/{{dataset}}/{{nvariant}}.tsv",
    retries: config["execution"]["retries"]
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
        " --settings {params.settings:q} --config-key {params.key}"
        " --batch-divisor {resources.batch_divisor}"
        " --checkpoint-dir {params.ckpt:q} --output {params.out:q} > {log:q} 2>&1"
