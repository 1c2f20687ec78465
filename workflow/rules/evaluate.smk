# ROUGE-1/2/L/Lsum and generation length of every final model (depth and NASH variants).


rule evaluate:
    input:
        model=f"{RESULTS}/models/{{size}}/{{dataset}}/{{variant}}/model/sidecar.json",
        data=f"{RESULTS}/data/{{dataset}}/{CFG.evaluate.split}.jsonl",
    output:
        scores=f"{RESULTS}/eval/{{size}}/{{dataset}}/{{variant}}.json",
        predictions=f"{RESULTS}/eval/{{size}}/{{dataset}}/{{variant}}.predictions.jsonl",
    params:
        # one process, one GPU (pinned when execution.pin_gpus), whatever gpus_per_job says
        launch=lambda wc: single_gpu_launcher(res(wc.size, "gpu")),
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        settings=settings_json(CFG.evaluate),
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
        " --tag variant={wildcards.variant}"
        " --output {output.scores:q} --predictions {output.predictions:q} > {log:q} 2>&1"
