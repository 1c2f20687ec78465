# Tables (CSV, Markdown, HTML) and figures (PNG, PDF) like the papers', the Pareto front and the
# recommended variant, from the JSON sidecars only. The tables and figures folders are also
# Snakemake report outputs: `snakemake --configfile X --report report.html` makes one page.

report: "../report/workflow.rst"


rule report:
    input:
        evals=eval_outputs(),
        eval_engines=eval_engine_outputs(),
        bench=bench_outputs(),
        bench_arch=bench_arch_outputs(),
    output:
        # Snakemake deletes directory outputs before the job runs: the report rewrites them
        # whole, so no table or figure of an earlier run (another variant list) is left behind.
        tables=report(directory(f"{REPORTS}/tables"), patterns=["{name}.html"],
                      caption="../report/tables.rst", category="Tables",
                      labels={"table": "{name}"}),
        figures=report(directory(f"{REPORTS}/figures"), patterns=["{name}.png"],
                       caption="../report/figures.rst", category="Figures",
                       labels={"figure": "{name}"}),
        done=f"{REPORTS}/DONE",
    params:
        outdir=lambda wc, output: os.path.dirname(output.done),
        # lists of paths, each shell-quoted
        bench=lambda wc, input: shlex.join(["--bench", *input.bench]) if input.bench else "",
        eval_engines=lambda wc, input: (shlex.join(["--eval-engines", *input.eval_engines])
                                        if input.eval_engines else ""),
        bench_arch=lambda wc, input: (shlex.join(["--bench-arch", *input.bench_arch])
                                      if input.bench_arch else ""),
        settings=settings_json(CFG.report),
        # for the printed command that reruns disturbed benchmarks with this run's config
        configfiles=configfile_args(),
        code=code("report"),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv",
    localrule: True
    shell:
        "python -m asymprune.report --eval {input.evals:q} {params.eval_engines} {params.bench}"
        " {params.bench_arch}"
        " --settings {params.settings:q} --config-key report {params.configfiles}"
        " --out-dir {params.outdir:q} > {log:q} 2>&1 && touch {output.done:q}"
