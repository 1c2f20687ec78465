# Remove whole encoder/decoder blocks from the teacher: variant e{E}d{D} keeps E/6 and D/6.


rule prune_layers:
    input:
        teacher=model_sidecar("{size}", "{dataset}", TEACHER),
    output:
        pruned_sidecar("{size}", "{dataset}", "{pvariant}"),
    params:
        teacher=lambda wc: model_dir(wc.size, wc.dataset, TEACHER),
        out=lambda wc: pruned_dir(wc.size, wc.dataset, wc.pvariant),
        layer_selection=CFG.layer_selection,
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
