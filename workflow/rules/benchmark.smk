# Generation latency (DESIGN.md section 5): trained models, and exact FLAN-T5 architectures
# with random weights (all 16 depth variants, no training needed).
BENCH_FLAGS = (
    f"--device {BENCH['device']} --device-label {BENCH_DEVICE} --dtype {BENCH['dtype']}"
    f" --batch-sizes {' '.join(map(str, BENCH['batch_sizes']))}"
    f" --source-tokens {BENCH['source_tokens']} --new-tokens {BENCH['new_tokens']}"
    f" --max-new-tokens {BENCH['max_new_tokens']} --warmup {BENCH['warmup']} --runs {BENCH['runs']}"
)
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
        flags=f"{BENCH_FLAGS} --modes {' '.join(BENCH['modes'])}",
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark/{{size}}/{{dataset}}/{{variant}}.log",
    threads: BENCH_THREADS
    resources:
        gpu=lambda wc: 1 if BENCH["device"] == "cuda" else 0,
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=120,
    shell:
        "{params.launch} asymprune.benchmark --model {params.model} --data-file {input.data}"
        " {params.flags} --threads {threads} --size {wildcards.size}"
        " --dataset {wildcards.dataset} --variant {wildcards.variant} --output {output}"
        " > {log} 2>&1"


rule benchmark_arch:
    output:
        f"{RESULTS}/bench_arch/{BENCH_DEVICE}/{{arch}}/{{archvariant}}.json",
    wildcard_constraints:
        arch="small|base|large",
        archvariant=r"e[1-6]d[1-6]",
    params:
        # random weights emit no meaningful EOS: only the fixed-length mode applies
        flags=f"{BENCH_FLAGS} --modes fixed",
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark_arch/{{arch}}/{{archvariant}}.log",
    threads: BENCH_THREADS
    resources:
        gpu=lambda wc: 1 if BENCH["device"] == "cuda" else 0,
        mem_mb=16000,
        runtime=120,
    shell:
        "python -m asymprune.benchmark --arch {wildcards.arch} --variant {wildcards.archvariant}"
        " {params.flags} --threads {threads} --output {output} > {log} 2>&1"
