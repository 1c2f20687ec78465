# ROUGE-1/2/L/Lsum and generation length of every final model (depth and NASH variants).
EV = config["evaluate"]


rule evaluate:
    input:
        model=f"{RESULTS}/models/{{size}}/{{dataset}}/{{variant}}/model/sidecar.json",
        data=f"{RESULTS}/data/{{dataset}}/{EV['split']}.jsonl",
    output:
        scores=f"{RESULTS}/eval/{{size}}/{{dataset}}/{{variant}}.json",
        predictions=f"{RESULTS}/eval/{{size}}/{{dataset}}/{{variant}}.predictions.jsonl",
    params:
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        limit=f"--max-samples {EV['max_samples']}" if EV["max_samples"] else "",
        settings=(f"--batch-size {EV['batch_size']} --max-source-length {EV['max_source_length']}"
                  f" --max-new-tokens {EV['max_new_tokens']} --num-beams {EV['num_beams']}"
                  f" --dtype {EV['dtype']}"),
        code=code("evaluate"),
    log:
        f"{LOGS}/evaluate/{{size}}/{{dataset}}/{{variant}}.log",
    threads: 1
    resources:
        gpu=lambda wc: res(wc.size, "gpu"),
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=120,
    shell:
        "OMP_NUM_THREADS={threads} python -m asymprune.evaluate --model {params.model} --data-file {input.data}"
        " {params.limit} {params.settings}"
        " --tag size={wildcards.size} --tag dataset={wildcards.dataset}"
        " --tag variant={wildcards.variant}"
        " --output {output.scores} --predictions {output.predictions} > {log} 2>&1"
