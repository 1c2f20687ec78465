# Data sets -> {train,validation,test}.jsonl; a tokenizer for models trained from scratch.


def data_flags(dataset):
    spec = config["datasets"][dataset]
    flags = [f"--kind {spec['kind']}", f"--source-prefix {config['data']['source_prefix']!r}",
             f"--empty-policy {config['data']['empty_policy']}"]
    if spec["kind"] == "generated":
        flags += [f"--num-samples {s}={n}" for s, n in spec["num_samples"].items()]
        flags.append(f"--seed {spec['seed']}")
    else:
        flags += [f"--path {spec['path']!r}", f"--format {spec['format']}",
                  f"--source-column {spec['source_column']!r}",
                  f"--target-column {spec['target_column']!r}"]
        if spec.get("name"):
            flags.append(f"--name {spec['name']!r}")
        if spec["id_column"]:
            flags.append(f"--id-column {spec['id_column']!r}")
        flags += [f"--split {s}={f!r}" for s, f in spec.get("files", {}).items()]
    flags += [f"--max-samples {s}={n}" for s, n in spec["max_samples"].items() if n]
    return " ".join(flags)


rule data:
    output:
        train=RESULTS + "/data/{dataset}/train.jsonl",
        validation=RESULTS + "/data/{dataset}/validation.jsonl",
        test=RESULTS + "/data/{dataset}/test.jsonl",
        sidecar=RESULTS + "/data/{dataset}/data.json",
    params:
        flags=lambda wc: data_flags(wc.dataset),
        outdir=lambda wc: f"{RESULTS}/data/{wc.dataset}",
        code=code("data"),
    log:
        LOGS + "/data/{dataset}.log",
    resources:
        gpu=0,
        mem_mb=8000,
        runtime=120,
    shell:
        "{PY} -m asymprune.data {params.flags} --output-dir {params.outdir} > {log} 2>&1"


rule tokenizer:
    input:
        train=RESULTS + "/data/{dataset}/train.jsonl",
    output:
        RESULTS + "/tokenizer/{size}/{dataset}/sidecar.json",
    params:
        vocab=lambda wc: model_spec(wc.size)["tokenizer_vocab_size"],
        outdir=lambda wc: f"{RESULTS}/tokenizer/{wc.size}/{wc.dataset}",
        code=code("tokenizer"),
    log:
        LOGS + "/tokenizer/{size}/{dataset}.log",
    resources:
        gpu=0,
    shell:
        "{PY} -m asymprune.tokenizer --train-file {input.train} --vocab-size {params.vocab}"
        " --output {params.outdir} > {log} 2>&1"
