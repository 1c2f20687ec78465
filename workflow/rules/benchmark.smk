# Generation latency (protocol: docs/benchmark.md): trained models, and exact FLAN-T5 architectures
# with random weights (all 16 depth variants, no training needed). One job times every variant
# of a size/dataset, interleaved round by round, so that their ratios share one machine state.
# On a CPU the benchmark takes every core of the run, so that no other job skews its timings.
BENCH_THREADS = workflow.cores if BENCH_DEVICE == "cpu" else 1


rule benchmark:
    input:
        unpack(bench_models),
        data=data_file("{dataset}", "test"),
    output:
        expand(bench_json("{size}", "{dataset}", "{variant}"), variant=all_variants(),
               allow_missing=True),
    params:
        launch=single_gpu_launcher(BENCH_GPU),
        models=bench_model_flags,
        outdir=lambda wc, output: os.path.dirname(output[0]),
        settings=stage_settings_json(CFG.benchmark),
        device_label=BENCH_DEVICE,
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark/{{size}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/benchmark/{{size}}/{{dataset}}.tsv",
    threads: BENCH_THREADS
    resources:
        # one GPU, always: the benchmark times one process (no torchrun), pinned like training
        gpu=BENCH_GPU,
        mem_mb=lambda wc: res(wc.size, "mem_mb"),
        runtime=240,
    shell:
        "{params.launch} asymprune.benchmark {params.models} --data-file {input.data:q}"
        " --settings {params.settings:q} --config-key benchmark"
        " --device-label {params.device_label} --threads {threads} --size {wildcards.size}"
        " --dataset {wildcards.dataset} --output-dir {params.outdir:q} > {log:q} 2>&1"


rule benchmark_arch:
    output:
        expand(bench_arch_json("{arch}", "{archvariant}"), archvariant=VARIANTS,
               allow_missing=True),
    wildcard_constraints:
        arch="|".join(flan_t5.SIZES),
    params:
        launch=single_gpu_launcher(BENCH_GPU),
        variants=" ".join(VARIANTS),
        outdir=lambda wc, output: os.path.dirname(output[0]),
        settings=stage_settings_json(CFG.benchmark),
        device_label=BENCH_DEVICE,
        code=code("benchmark"),
    log:
        f"{LOGS}/benchmark_arch/{{arch}}.log",
    benchmark:
        f"{BENCHMARKS}/benchmark_arch/{{arch}}.tsv",
    threads: BENCH_THREADS
    resources:
        gpu=BENCH_GPU,
        mem_mb=64000,
        runtime=240,
    shell:
        # random weights emit no meaningful EOS: only the fixed-length mode applies
        "{params.launch} asymprune.benchmark --arch {wildcards.arch} --variants {params.variants}"
        " --settings {params.settings:q} --config-key benchmark --modes fixed"
        " --device-label {params.device_label} --threads {threads}"
        " --output-dir {params.outdir:q} > {log:q} 2>&1"
