# Generation latency (DESIGN.md section 5): trained models, and exact FLAN-T5 architectures
# with random weights (all 16 depth variants, no training needed).
# On a CPU the benchmark takes every core of the run, so that no other job skews its timings.
BENCH_THREADS = workflow.cores if BENCH["device"] == "cpu" else 1


rule benchmark:
    input:
        model=f"{RESULTS}/models/{{size}}/{{dataset}}/{{variant}}/model/sidecar.json",
        data=f"{RESULTS}/data/{{dataset}}/test.jsonl",
    output:
        f"{RESULTS}/bench/{BENCH_DEVICE}/{{size}}/{{dataset}}/{{variant}}.json",
    params:
        model=lambda wc: model_dir(wc.size, wc.dataset, wc.variant),
        launch=lambda wc: launcher(wc.size),
        settings=settings_json(CFG.benchmark),
        device_label=BENCH_DEVICE,
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark/{{size}}/{{dataset}}/{{variant}}.log",
    threads: BENCH_THREADS
    resources:
        gpu=lambda wc: 1 if BENCH["device"] == "cuda" else 0,
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=120,
    shell:
        "{params.launch} asymprune.benchmark --model {params.model:q} --data-file {input.data:q}"
        " --settings {params.settings:q} --config-key benchmark --device-label {params.device_label}"
        " --threads {threads} --size {wildcards.size}"
        " --dataset {wildcards.dataset} --variant {wildcards.variant} --output {output:q}"
        " > {log:q} 2>&1"


rule benchmark_arch:
    output:
        f"{RESULTS}/bench_arch/{BENCH_DEVICE}/{{arch}}/{{archvariant}}.json",
    wildcard_constraints:
        arch="|".join(settings.FLAN_SIZES),
        archvariant=variants.DEPTH_BODY,
    params:
        settings=settings_json(CFG.benchmark),
        device_label=BENCH_DEVICE,
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark_arch/{{arch}}/{{archvariant}}.log",
    threads: BENCH_THREADS
    resources:
        gpu=lambda wc: 1 if BENCH["device"] == "cuda" else 0,
        mem_mb=16000,
        runtime=120,
    shell:
        # random weights emit no meaningful EOS: only the fixed-length mode applies
        "python -m asymprune.benchmark --arch {wildcards.arch} --variant {wildcards.archvariant}"
        " --settings {params.settings:q} --config-key benchmark --modes fixed"
        " --device-label {params.device_label} --threads {threads} --output {output:q} > {log:q} 2>&1"
