"""The report stage: ``python -m asymprune.report`` (usage: ``asymprune.report``). All the math
first, then the files, each named from the registry ``report.outputs``."""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asymprune import settings, settings_io
from asymprune.provenance import make_sidecar, write_json
from asymprune.report import __doc__ as USAGE
from asymprune.report import decide as D
from asymprune.report import outputs
from asymprune.report import read as R
from asymprune.report import speed as S
from asymprune.report import tables as T
from asymprune.report.figures import (figure1, figure3, figure5, left_out_text, pareto_figure,
                                      plotted_points)
from asymprune.report.order import sort_sizes, variant_key
from asymprune.report.outputs import FIGURES, FILES, TABLES
from asymprune.report.render import clear_stale, save_figure, write_table
from asymprune.variants import TEACHER

log = logging.getLogger("asymprune.report")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, settings.Report]:
    p = argparse.ArgumentParser(prog="python -m asymprune.report",
                                description=f"{USAGE}\nOutputs:\n{outputs.listing()}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", nargs="*", type=Path, default=[],
                   help="eval JSON sidecars (metrics + size/dataset/variant)")
    p.add_argument("--eval-engines", nargs="*", type=Path, default=[],
                   help="eval JSON sidecars of further engines (evaluate.engines: ROUGE, "
                        "generation length, identical_share)")
    p.add_argument("--bench", nargs="*", type=Path, default=[],
                   help="benchmark JSON sidecars of trained models (needs --eval for impact)")
    p.add_argument("--bench-arch", nargs="*", type=Path, default=[],
                   help="architecture-only benchmark JSON sidecars (no dataset)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="report folder, e.g. reports/demo (tables/ and figures/ inside)")
    p.add_argument("--baseline", default=TEACHER,
                   help="variant every impact, retention and speedup is relative to")
    p.add_argument("--configfile", action="append", default=[],
                   help="the workflow's config file(s), for the printed command that reruns "
                        "disturbed benchmarks (the workflow passes them; repeat)")
    settings_io.add_arguments(p, settings.Report)
    args, r = settings_io.parse(p, settings.Report, argv)
    if not args.eval and not args.bench_arch:
        p.error("nothing to report: give --eval files and/or --bench-arch files")
    if args.bench and not args.eval:
        p.error("--bench needs --eval: the speed tables show each variant's R-2 impact")
    if args.eval_engines and not args.eval:
        p.error("--eval-engines needs --eval: retention is relative to the main evaluation")
    for flag, files in (("--eval", args.eval), ("--eval-engines", args.eval_engines),
                        ("--bench", args.bench),
                        ("--bench-arch", args.bench_arch)):
        for f in files:
            if not f.is_file():
                p.error(f"{flag} {f}: no such file")
    return args, r


# ----------------------------------------------------------------------------- main

def disturbed_files(frames: list[pd.DataFrame]) -> list[str]:
    """The benchmark JSON files (as given on the command line) with a disturbed cell."""
    return sorted({f for frame in frames for f in frame.loc[frame["disturbed"], "file"]})


def rerun_command(list_file: Path, files: list[str], configfiles: list[str]) -> str:
    """One command, run where the workflow ran, that reruns the listed benchmark jobs and,
    downstream, this report (``--forcerun`` takes output files; a benchmark job writes every
    variant of its size/dataset, so all of them are timed again, interleaved). Without
    config files the workflow's default config.yaml applies. `$(cat ...)` splits on
    whitespace, so a list whose paths have spaces (results_dir "my results") is fed through
    xargs, one line per argument, instead."""
    listed = shlex.quote(str(list_file))
    command = shlex.join(["snakemake", *(a for f in configfiles for a in ("--configfile", f)),
                          "--cores", "all", "--forcerun"])
    if any(any(c.isspace() for c in f) for f in files):
        return f"xargs -d '\\n' -a {listed} {command}"
    return f"{command} $(cat {listed})"


@dataclass
class Inputs:
    """The sidecars as frames (``report.read``), the benchmarks judged (``tables.judge``)."""

    eval_records: list[R.Record]
    ev: pd.DataFrame | None
    eng: pd.DataFrame | None
    bench: pd.DataFrame | None
    arch: pd.DataFrame | None


@dataclass
class Results:
    """All the report's math, before any file is touched."""

    tables: dict[str, pd.DataFrame]           # file name (outputs.TABLES) -> table
    sp: pd.DataFrame | None                   # trained models' cells with speedups
    arch_sp: pd.DataFrame | None              # architecture-only cells with speedups
    paretos: dict[tuple[str, str], pd.DataFrame]
    recommendation: pd.DataFrame | None
    disturbed: list[str]                      # benchmark files with a disturbed cell
    rerun: str | None                         # the command that reruns them


def read_inputs(args: argparse.Namespace, r: settings.Report) -> Inputs:
    thresholds = (r.max_spread, r.max_foreign_load)  # the disturbed judgement
    eval_records = R.load(args.eval)
    return Inputs(
        eval_records=eval_records,
        ev=R.eval_frame(eval_records) if args.eval else None,
        eng=R.engine_eval_frame(R.load(args.eval_engines)) if args.eval_engines else None,
        bench=(T.judge(R.bench_frame(R.load(args.bench)), *thresholds) if args.bench
               else None),
        arch=(T.judge(R.bench_frame(R.load(args.bench_arch), with_dataset=False), *thresholds)
              if args.bench_arch else None))


def compute(args: argparse.Namespace, r: settings.Report, inp: Inputs) -> Results:
    """Every table, named from the registry; a missing baseline fails here, before any file
    is touched."""
    base, ev, eng, bench = args.baseline, inp.ev, inp.eng, inp.bench
    budget, floor, batch_size = r.latency_budget_ms, r.quality_floor, r.batch_size
    tabs: dict[str, pd.DataFrame] = {}

    def put(kind: str, tables: dict) -> None:
        for key, t in tables.items():
            tabs[TABLES[kind].name(key if isinstance(key, tuple) else (key,))] = t

    sp = arch_sp = recommendation = None
    paretos: dict[tuple[str, str], pd.DataFrame] = {}
    if ev is not None:
        put("retention", T.retention_tables(ev, base))
        put("detail", T.detail_tables(ev, base, bench))
        put("nash", T.nash_tables(inp.eval_records, ev, base))
    if eng is not None:
        put("precision", T.precision_tables(ev, eng, base))
    if bench is not None:
        sp = T.speed_frame(ev, bench, base)
        put("speed", S.speed_tables(sp, base))
        put("speedup_summary", S.summary_tables(sp, base))
        put("speedup_by_engine", S.engine_tables(sp, base))
        put("compiled_vs_eager", S.engine_ratio_tables(sp, base))
        paretos = D.pareto_tables(sp, ev, batch_size, base, eng)
        put("pareto", paretos)
        recommendation = D.recommendation_table(paretos, budget, floor, batch_size, base)
        tabs[TABLES["recommendation"].name()] = recommendation
    elif budget is not None or floor is not None:
        log.warning("report.latency_budget_ms / report.quality_floor are set but there are no "
                    "--bench files (benchmark.enabled false?): no recommendation")
    if inp.arch is not None:
        arch_sp = T.arch_frame(inp.arch, base)
        put("arch_speed", S.arch_tables(arch_sp, base))
    cell_frames = [f for f in (sp, arch_sp) if f is not None]
    if cell_frames:
        tabs[TABLES["benchmark_cells"].name()] = S.cells_table(cell_frames, base)
    disturbed = disturbed_files(cell_frames)
    disturbed_list = args.out_dir / FILES["disturbed"].name()
    rerun = rerun_command(disturbed_list, disturbed, args.configfile) if disturbed else None
    if rerun is not None:
        tabs[TABLES["benchmark_cells"].name()].attrs["notes"].append(
            f"{len(disturbed)} benchmark files have disturbed cells; rerun them (and this "
            f"report) with: {rerun}")
    return Results(tabs, sp, arch_sp, paretos, recommendation, disturbed, rerun)


def draw_figures(args: argparse.Namespace, r: settings.Report, ev: pd.DataFrame | None, res: Results,
                 figures_dir: Path, written: list[Path]) -> None:
    """Every figure, named from the registry; one whose cells are all disturbed is not
    drawn (and logged)."""
    base, budget, floor = args.baseline, r.latency_budget_ms, r.quality_floor

    def draw(name: str, n_out: int, points: pd.DataFrame, make) -> None:
        if points.empty:
            log.warning("figure %s not drawn: all of its %d cells are disturbed", name, n_out)
            return
        save_figure(make(), figures_dir, name, written)

    if ev is not None:
        for dataset in sorted(ev["dataset"].unique()):
            save_figure(figure3(ev, dataset, base), figures_dir,
                        FIGURES["fig3"].name((dataset,)), written)
    if res.sp is not None:
        for key, g in res.sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
            device, protocol, mode, engine = key
            what = (f"{T.protocol_label(protocol, g)}; {mode} output length; {engine} engine; "
                    f"{device}")
            bs = int(g["batch_size"].min())
            points, n_out = plotted_points(g[g["batch_size"] == bs])
            draw(FIGURES["fig1"].name(key), n_out, points,
                 lambda: figure1(points, f"Quality vs speedup\n({what})\n{left_out_text(n_out)}",
                                 bs, base))
            if g["batch_size"].nunique() < 2:
                log.info("no speedup-vs-batch figure for %s: one batch size", "/".join(key))
                continue
            points5, n_out5 = plotted_points(g)
            panels = list(g[["size", "dataset"]].drop_duplicates().itertuples(index=False))
            draw(FIGURES["fig5"].name(key), n_out5, points5,
                 lambda: figure5(points5, f"Speedup vs batch size\n({what})\n"
                                          f"{left_out_text(n_out5)}", panels, base))
    if res.arch_sp is not None:
        for key, g in res.arch_sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
            device, protocol, mode, engine = key
            if g["batch_size"].nunique() < 2:
                log.info("no architecture-only speedup-vs-batch figure for %s: one batch size",
                         "/".join(key))
                continue
            points, n_out = plotted_points(g)
            panels = [(s, None) for s in sort_sizes(g["size"])]
            title = (f"Architecture-only speedup vs batch size\n"
                     f"({T.protocol_label(protocol, g)}; {mode} output length; {engine} "
                     f"engine; random weights; {device})\n{left_out_text(n_out)}")
            draw(FIGURES["fig5_arch"].name(key), n_out, points,
                 lambda: figure5(points, title, panels, base))
    rec_table = res.recommendation
    for (size, dataset), t in res.paretos.items():
        rec = rec_table[(rec_table["size"] == size) & (rec_table["dataset"] == dataset)]
        chosen = {r["device"]: (r["variant"], r["engine"]) for r in rec.to_dict("records")
                  if r["variant"] is not None and not pd.isna(r["variant"])}
        base_r2 = ev[(ev["size"] == size) & (ev["dataset"] == dataset)
                     & (ev["variant"] == base)]["rouge2"].iloc[0]
        # the floor is a retention in % of the baseline's R-2: 95 % of 20.0 -> R-2 19.0
        floor_r2 = None if floor is None else floor * base_r2 / 100
        save_figure(pareto_figure(t, t.attrs["title"], chosen, budget, floor_r2, base),
                    figures_dir, FIGURES["pareto"].name((size, dataset)), written)


def log_decisions(res: Results, disturbed_list: Path, any_cells: bool) -> None:
    if res.disturbed:
        log.warning("%d benchmark files have disturbed cells (listed in %s); rerun them with:\n"
                    "  %s", len(res.disturbed), disturbed_list, res.rerun)
    elif any_cells:
        log.info("no disturbed benchmark cell")
    if res.recommendation is not None:
        for r in res.recommendation.to_dict("records"):
            log.info("recommendation for %s/%s on %s: %s (%s)", r["size"], r["dataset"],
                     r["device"], f"{r['variant']} on {r['engine']}" if r["variant"] else "none",
                     r["reason"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args, r = parse_args(argv)
    start = time.time()
    variant_key(args.baseline)
    inp = read_inputs(args, r)
    res = compute(args, r, inp)

    tables_dir, figures_dir = args.out_dir / "tables", args.out_dir / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    clear_stale(tables_dir, outputs.table_prefixes(), outputs.TABLE_SUFFIXES)
    clear_stale(figures_dir, outputs.figure_prefixes(), outputs.FIGURE_SUFFIXES)
    written: list[Path] = []
    for name, t in res.tables.items():
        write_table(t, tables_dir, name, written)
    draw_figures(args, r, inp.ev, res, figures_dir, written)

    disturbed_list = args.out_dir / FILES["disturbed"].name()
    disturbed_list.write_text("".join(f"{f}\n" for f in res.disturbed))
    log_decisions(res, disturbed_list, res.sp is not None or res.arch_sp is not None)
    rel = sorted(str(p.relative_to(args.out_dir)) for p in written)
    recommendation = res.recommendation
    sidecar = make_sidecar(
        "report", settings_io.record(args, r),
        samples={"eval_files": len(args.eval), "eval_engine_files": len(args.eval_engines),
                 "bench_files": len(args.bench),
                 "bench_arch_files": len(args.bench_arch)},
        wall_time_s=time.time() - start, files=rel, disturbed_benchmarks=res.disturbed,
        rerun_disturbed_command=res.rerun,
        recommendation=([] if recommendation is None
                        else recommendation.astype(object).where(recommendation.notna(), None)
                        .to_dict("records")))
    write_json(args.out_dir / FILES["sidecar"].name(), sidecar)
    log.info("wrote %d tables and figures under %s", len(rel), args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
