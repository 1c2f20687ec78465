# Data sets -> {train,validation,test}.jsonl; a tokenizer for models trained from scratch.


rule data:
    output:
        train=f"{RESULTS}/data/{{dataset}}/train.jsonl",
        validation=f"{RESULTS}/data/{{dataset}}/validation.jsonl",
        test=f"{RESULTS}/data/{{dataset}}/test.jsonl",
        sidecar=f"{RESULTS}/data/{{dataset}}/data.json",
    params:
        flags=lambda wc: data_flags(wc.dataset),
        outdir=lambda wc, output: os.path.dirname(output.sidecar),
        code=code("data"),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    resources:
        gpu=0,
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m asymprune.data {params.flags} --output-dir {params.outdir} > {log} 2>&1"


rule tokenizer:
    input:
        train=f"{RESULTS}/data/{{dataset}}/train.jsonl",
    output:
        f"{RESULTS}/tokenizer/{{size}}/{{dataset}}/sidecar.json",
    params:
        vocab=lambda wc: model_spec(wc.size)["tokenizer_vocab_size"],
        outdir=lambda wc, output: os.path.dirname(output[0]),
        code=code("tokenizer"),
    log:
        f"{LOGS}/tokenizer/{{size}}/{{dataset}}.log",
    resources:
        gpu=0,
    shell:
        "python -m asymprune.tokenizer --train-file {input.train} --vocab-size {params.vocab}"
        " --output {params.outdir} > {log} 2>&1"
