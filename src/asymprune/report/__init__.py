"""Tables and figures of both papers, and which variant to pick, from eval and benchmark
sidecars (and nothing else).

  python -m asymprune.report --eval results/demo/eval/*/*/*.json \\
      --bench results/demo/bench/cpu/*/*/*.json --bench-arch results/demo/bench_arch/*/*/*.json \\
      --out-dir reports/demo [--latency-budget-ms 50] [--quality-floor 95] [--batch-size 1]

Every input JSON carries top-level labels: eval ``size``, ``dataset``, ``variant``; benchmark
also ``device_label``; architecture-only benchmarks have no ``dataset``. Each benchmark cell
names its protocol (paper, or nash = NASH's beam 4 / batch 32), mode (fixed / natural output
length) and engine (eager / compiled). Speedups divide medians of cells of the same device,
protocol, mode, engine and batch size. Written under --out-dir: the outputs registered in
``report.outputs`` (``--help`` lists them below, and so does docs/report.md).

Tables are .csv, .md and .html, figures .png and .pdf. A cell judged disturbed (its runs' spread
above report.max_spread, or foreign CPU load above report.max_foreign_load: docs/benchmark.md)
has a `disturbed` column in CSV and a † in Markdown/HTML (explained below the table),
and so does its speedup and every speedup divided by a disturbed e6d6 cell; figures leave
those cells out and say how many. Metrics are printed as the eval stage stored them. Files of
these names left by an earlier run are removed first, so the folder shows only this run's.

Modules: ``read`` (sidecars -> records -> frames), ``tables`` / ``speed`` / ``decide`` (the
math), ``figures``, ``render`` (files), ``outputs`` (the registry), ``__main__`` (the stage).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The stage entry point. Imported lazily, like ``asymprune.nash``; the import statement
    also lets ``provenance.stage_code_hash("report")`` find, and hash, the stage's code."""
    from asymprune.report.__main__ import main as stage_main

    return stage_main(argv)
