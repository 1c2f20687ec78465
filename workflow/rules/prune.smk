# Remove whole encoder/decoder blocks from the teacher: variant e{E}d{D} keeps E/6 and D/6.


rule prune_layers:
    input:
        teacher=f"{RESULTS}/models/{{size}}/{{dataset}}/e6d6/model/sidecar.json",
    output:
        f"{RESULTS}/models/{{size}}/{{dataset}}/{{pvariant}}/pruned/sidecar.json",
    params:
        teacher=lambda wc: model_dir(wc.size, wc.dataset, "e6d6"),
        out=lambda wc: f"{RESULTS}/models/{wc.size}/{wc.dataset}/{wc.pvariant}/pruned",
        layer_selection=config["layer_selection"],
        code=code("prune_layers"),
    log:
        f"{LOGS}/prune_layers/{{size}}/{{dataset}}/{{pvariant}}.log",
    benchmark:
        f"{BENCHMARKS}/prune_layers/{{size}}/{{dataset}}/{{pvariant}}.tsv",
    resources:
        gpu=0,
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
    shell:
        "python -m asymprune.prune_layers --model {params.teacher:q} --variant {wildcards.pvariant}"
        " --layer-selection {params.layer_selection} --output {params.out:q} > {log:q} 2>&1"
