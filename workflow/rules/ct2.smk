# CTranslate2 exports: each trained model converted once (NASH encoders padded back to full
# width with zeros, see asymprune.ct2); the compute type (float32, int8, ...) is chosen when a
# benchmark or evaluation loads it, so one export serves every ct2-* engine.
# One job exports every model of a size/data set (those the benchmark times and the engines
# score, common.smk: all_variants()): an export is about a second of conversion after 4-6 CPU s
# of imports, so 22 exports in one job cost a fraction of 22 jobs (and 22 queue waits on
# SLURM). A changed model re-exports its size/data set: seconds per model.


rule ct2_export:
    input:
        [model_sidecar("{size}", "{dataset}", v) for v in all_variants()],
    output:
        [ct2_sidecar("{size}", "{dataset}", v) for v in all_variants()],
    params:
        models=lambda wc: shlex.join([model_dir(wc.size, wc.dataset, v) for v in all_variants()]),
        outdirs=lambda wc: shlex.join([ct2_dir(wc.size, wc.dataset, v) for v in all_variants()]),
        code=code("ct2"),
    log:
        f"{LOGS}/ct2/{{size}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/ct2_export/{{size}}/{{dataset}}.tsv",
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        # FLAN-T5-large: about 30 s an export (3 GB read and written), 22 models
        runtime=lambda wc: 10 + len(all_variants()),
    shell:
        "python -m asymprune.ct2 --model {params.models} --output-dir {params.outdirs}"
        " > {log:q} 2>&1"
