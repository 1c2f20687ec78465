# NASH (Ko et al.): shallow decoder (uniform block selection) + narrow encoder (L0 gates on
# heads and FFN units, Lagrangian sparsity target), trained with KL + hidden-state
# distillation from the teacher, physically pruned; then fine-tuned like every other variant.
# The same two rules train the equal-budget baselines e{E}d{D}-{kd|ce} (config `baselines`):
# the depth variant's blocks, no gates, NASH's steps and its final fine-tune. A NASH variant
# whose id ends in -rel trains with the released code's protocol (nash.released, docs/nash.md).


rule nash:
    input:
        teacher=model_sidecar("{size}", "{dataset}", TEACHER),
        **train_inputs("{dataset}"),
    output:
        pruned_sidecar("{size}", "{dataset}", "{nvariant}"),
    params:
        launch=lambda wc: launcher(wc.size),
        teacher=lambda wc: model_dir(wc.size, wc.dataset, TEACHER),
        # a -rel variant trains with the released code's protocol (its own settings block)
        settings=lambda wc: settings_json(CFG.nash_stage_settings(wc.nvariant)[1]),
        key=lambda wc: CFG.nash_stage_settings(wc.nvariant)[0],
        # a baseline keeps its depth variant's blocks, chosen as for the re-fine-tuned twin
        selection=lambda wc: ("" if wc.nvariant.startswith("nash-") else
                              shlex.join(["--layer-selection", CFG.layer_selection])),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, wc.nvariant, "nash"),
        out=lambda wc, output: os.path.dirname(output[0]),
        code=code("nash"),
    log:
        f"{LOGS}/nash/{{size}}/{{dataset}}/{{nvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/nash/{{size}}/{{dataset}}/{{nvariant}}.tsv",
    retries: CFG.retries
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
        pruned=pruned_sidecar("{size}", "{dataset}", "{nvariant}"),
        **train_inputs("{dataset}"),
    output:
        model_sidecar("{size}", "{dataset}", "{nvariant}"),
    params:
        launch=lambda wc: launcher(wc.size),
        settings=lambda wc: settings_json(CFG.nash_finetune_settings(wc.nvariant)[1]),
        key=lambda wc: CFG.nash_finetune_settings(wc.nvariant)[0],
        pruned=lambda wc, input: os.path.dirname(input.pruned),
        ckpt=lambda wc: checkpoint_dir(wc.size, wc.dataset, wc.nvariant, "finetune"),
        out=lambda wc, output: os.path.dirname(output[0]),
        code=code("finetune"),
    log:
        f"{LOGS}/nash_finetune/{{size}}/{{dataset}}/{{nvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/nash_finetune/{{size}}/{{dataset}}/{{nvariant}}.tsv",
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
        " --settings {params.settings:q} --config-key {params.key}"
        " --batch-divisor {resources.batch_divisor}"
        " --checkpoint-dir {params.ckpt:q} --output {params.out:q} > {log:q} 2>&1"
