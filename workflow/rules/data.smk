# Data sets -> {train,validation,test}.jsonl; a tokenizer for models trained from scratch.


rule data:
    output:
        **{split: data_file("{dataset}", split) for split in settings.SPLITS},
        sidecar=f"{data_dir('{dataset}')}/data.json",
    params:
        # datasets.<name> merged over data: one JSON argument, shell-quoted below (:q)
        settings=lambda wc: settings_json(CFG.datasets[wc.dataset]),
        key=lambda wc: f"datasets.{wc.dataset}",
        outdir=lambda wc, output: os.path.dirname(output.sidecar),
        code=code("data"),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/data/{{dataset}}.tsv",
    resources:
        gpu=0,
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m asymprune.data --settings {params.settings:q} --config-key {params.key:q}"
        " --output-dir {params.outdir:q} > {log:q} 2>&1"


rule tokenizer:
    input:
        train=data_file("{dataset}", "train"),
    output:
        f"{tokenizer_dir('{size}', '{dataset}')}/sidecar.json",
    params:
        vocab=lambda wc: model_spec(wc.size)["tokenizer_vocab_size"],
        outdir=lambda wc, output: os.path.dirname(output[0]),
        code=code("tokenizer"),
    log:
        f"{LOGS}/tokenizer/{{size}}/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/tokenizer/{{size}}/{{dataset}}.tsv",
    resources:
        gpu=0,
    shell:
        "python -m asymprune.tokenizer --train-file {input.train:q} --vocab-size {params.vocab}"
        " --output {params.outdir:q} > {log:q} 2>&1"
