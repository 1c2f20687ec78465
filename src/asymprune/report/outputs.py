"""The one registry of the report's outputs: every table, figure and file it writes, named
once. ``__main__`` names its files from it, cleans stale files by it, and its CLI help and
docs/report.md list it (tests/test_report.py keeps the docs current).

``{x}`` are labels found in the inputs; P = {device}_{protocol}_{mode}.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_SUFFIXES = (".csv", ".md", ".html")
FIGURE_SUFFIXES = (".png", ".pdf")


@dataclass(frozen=True)
class Output:
    kind: str      # table | figure | file
    pattern: str   # the file name (without suffix) with its labels as {x}
    what: str

    @property
    def prefix(self) -> str:
        """The fixed start of every name (the whole name of an output without labels)."""
        return self.pattern.split("{", 1)[0]

    def name(self, key: tuple = ()) -> str:
        """The file name (without suffix) for the labels ``key``, joined by "_"."""
        return self.prefix + "_".join(key) if key else self.pattern


def _out(kind: str, pattern: str, what: str) -> Output:
    return Output(kind, pattern, what)


TABLES = {
    "retention": _out("table", "retention_{dataset}", "Tables 5-7: R-2 and retention R per size"),
    "detail": _out("table", "detail_{size}_{dataset}",
                   "Tables 16-24: R-1, R-2, RSL, R-L, GenL + impact, R-2 95 % interval"),
    "nash": _out("table", "nash_{size}_{dataset}",
                 "NASH at equal budget: sparsities, steps and examples, R-2 (from each eval's "
                 "record)"),
    "precision": _out("table", "precision_{size}_{dataset}",
                      "R-2 per engine and precision, share of summaries equal to the main one"),
    "speed": _out("table", "speed_{P}_{engine}_{size}_{dataset}",
                  "Tables 10, 25-33: median ms, spread, speedup per batch size"),
    "speedup_summary": _out("table", "speedup_summary_{P}_{engine}",
                            "Tables 8-9 (+ NASH Table 1): impact, R-L, speedup at the smallest "
                            "batch size for every size/dataset"),
    "speedup_by_engine": _out("table", "speedup_by_engine_{P}_{size}_{dataset}",
                              "speedup vs e6d6, engines side by side"),
    "compiled_vs_eager": _out("table", "compiled_vs_eager_{P}_{size}_{dataset}",
                              "compiled / eager median per variant (both timed)"),
    "arch_speed": _out("table", "arch_speed_{P}_{engine}",
                       "architecture-only params, median ms, speedup"),
    "benchmark_cells": _out("table", "benchmark_cells",
                            "every cell: all statistics, the disturbed judgement and reasons"),
    "pareto": _out("table", "pareto_{size}_{dataset}",
                   "R-2 vs median latency and the Pareto front"),
    "recommendation": _out("table", "recommendation",
                           "the variant and engine the report settings pick, and why"),
}
FIGURES = {
    "fig1": _out("figure", "fig1_quality_vs_speedup_{P}_{engine}",
                 "Figure 1 (every size x dataset)"),
    "fig3": _out("figure", "fig3_rouge2_vs_layers_{dataset}", "Figure 3"),
    "fig5": _out("figure", "fig5_speedup_vs_batch_{P}_{engine}",
                 "Figure 5 (every size x dataset)"),
    "fig5_arch": _out("figure", "fig5_arch_speedup_vs_batch_{P}_{engine}",
                      "Figure 5 for architecture-only runs"),
    "pareto": _out("figure", "pareto_{size}_{dataset}", "the front, the recommended variant"),
}
FILES = {
    "disturbed": _out("file", "disturbed_benchmarks.txt",
                      "benchmark JSONs with a disturbed cell, to rerun"),
    "sidecar": _out("file", "report.json", "sidecar: inputs, settings and files written"),
}


def table_prefixes() -> tuple[str, ...]:
    return tuple(o.prefix for o in TABLES.values())


def figure_prefixes() -> tuple[str, ...]:
    return tuple(o.prefix for o in FIGURES.values())


def listing() -> str:
    """Every output, one line each, as the CLI help and docs/report.md show them."""
    rows = ([(f"tables/{o.pattern}", o.what) for o in TABLES.values()]
            + [(f"figures/{o.pattern}", o.what) for o in FIGURES.values()]
            + [(o.pattern, o.what) for o in FILES.values()])
    width = max(len(p) for p, _ in rows) + 2
    return "\n".join(f"  {p:<{width}}{w}" for p, w in rows)


if __name__ == "__main__":  # python -m asymprune.report.outputs: the listing of docs/report.md
    print(listing())
