# ROUGE-1/2/L/Lsum and generation length of every final model (depth and NASH variants), with
# the main engine (evaluate.engine), and again with each of evaluate.engines (e.g. ct2-int8),
# which also records the share of documents predicted as the main evaluation predicted them.


rule evaluate:
    input:
        unpack(lambda wc: eval_inputs(wc, CFG.evaluate.engine)),
    output:
        scores=eval_json("{size}", "{dataset}", "{variant}"),
        predictions=eval_predictions("{size}", "{dataset}", "{variant}"),
    params:
        # one process, one GPU (pinned when execution.pin_gpus), whatever gpus_per_job says
        launch=lambda wc: single_gpu_launcher(res(wc.size, "gpu")),
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        settings=stage_settings_json(CFG.evaluate),
        ct2=lambda wc: ct2_flag(wc, CFG.evaluate.engine),
        code=code("evaluate"),
    log:
        f"{LOGS}/evaluate/{{size}}/{{dataset}}/{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{size}}/{{dataset}}/{{variant}}.tsv",
    threads: 1
    resources:
        gpu=lambda wc: res(wc.size, "gpu"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=120,
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} asymprune.evaluate --model {params.model:q}"
        " --data-file {input.data:q} --settings {params.settings:q} --config-key evaluate"
        " --tag size={wildcards.size} --tag dataset={wildcards.dataset}"
        " --tag variant={wildcards.variant} {params.ct2}"
        " --output {output.scores:q} --predictions {output.predictions:q} > {log:q} 2>&1"


# the exporter's code version: a changed exporter re-scores the ct2-* evaluations (their export
# input is ancient(), see common.smk: eval_inputs)
CT2_CODE = code("ct2")


rule evaluate_engine:
    input:
        unpack(lambda wc: eval_inputs(wc, wc.engine)),
        reference=eval_predictions("{size}", "{dataset}", "{variant}"),
    output:
        scores=eval_engine_json("{size}", "{dataset}", "{variant}", "{engine}"),
        predictions=eval_engine_predictions("{size}", "{dataset}", "{variant}", "{engine}"),
    params:
        launch=lambda wc: single_gpu_launcher(res(wc.size, "gpu")),
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        settings=stage_settings_json(CFG.evaluate),
        engine=lambda wc: shlex.join(["--engine", wc.engine]),
        ct2=lambda wc: ct2_flag(wc, wc.engine),
        code=code("evaluate"),
        ct2_code=lambda wc: CT2_CODE if wc.engine.startswith("ct2-") else "",
    log:
        f"{LOGS}/evaluate_engine/{{size}}/{{dataset}}/{{variant}}/{{engine}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_engine/{{size}}/{{dataset}}/{{variant}}/{{engine}}.tsv",
    threads: 1
    resources:
        gpu=lambda wc: res(wc.size, "gpu"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=120,
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} asymprune.evaluate --model {params.model:q}"
        " --data-file {input.data:q} --settings {params.settings:q} --config-key evaluate"
        " --tag size={wildcards.size} --tag dataset={wildcards.dataset}"
        " --tag variant={wildcards.variant} {params.engine} {params.ct2}"
        " --reference-predictions {input.reference:q}"
        " --output {output.scores:q} --predictions {output.predictions:q} > {log:q} 2>&1"
