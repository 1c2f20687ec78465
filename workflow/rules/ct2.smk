# CTranslate2 exports: each trained model converted once (NASH encoders padded back to full
# width with zeros, see asymprune.ct2); the compute type (float32, int8, ...) is chosen when a
# benchmark or evaluation loads it, so one export serves every ct2-* engine.


rule ct2_export:
    input:
        model=model_sidecar("{size}", "{dataset}", "{variant}"),
    output:
        sidecar=ct2_sidecar("{size}", "{dataset}", "{variant}"),
    params:
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        outdir=lambda wc, output: os.path.dirname(output.sidecar),
        code=code("ct2"),
    log:
        f"{LOGS}/ct2/{{size}}/{{dataset}}/{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/ct2_export/{{size}}/{{dataset}}/{{variant}}.tsv",
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=30,
    shell:
        "python -m asymprune.ct2 --model {params.model:q} --output-dir {params.outdir:q}"
        " > {log:q} 2>&1"
