# Tables (CSV, Markdown) and figures (PNG, PDF) like the papers', from the JSON sidecars only.


rule report:
    input:
        evals=eval_outputs(),
        bench=bench_outputs(),
        bench_arch=bench_arch_outputs(),
    output:
        f"{REPORTS}/DONE",
    params:
        outdir=lambda wc, output: os.path.dirname(output[0]),
        # lists of paths, each shell-quoted
        bench=lambda wc, input: shlex.join(["--bench", *input.bench]) if input.bench else "",
        bench_arch=lambda wc, input: (shlex.join(["--bench-arch", *input.bench_arch])
                                      if input.bench_arch else ""),
        code=code("report"),
    log:
        f"{LOGS}/report.log",
    localrule: True
    shell:
        "python -m asymprune.report --eval {input.evals:q} {params.bench} {params.bench_arch}"
        " --out-dir {params.outdir:q} > {log:q} 2>&1 && touch {output:q}"
