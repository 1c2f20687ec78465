"""Tables and figures of both papers, and which variant to pick, from eval and benchmark
sidecars (and nothing else).

  python -m asymprune.report --eval results/demo/eval/*/*/*.json \\
      --bench results/demo/bench/cpu/*/*/*.json --bench-arch results/demo/bench_arch/*/*/*.json \\
      --out-dir reports/demo [--latency-budget-ms 50] [--quality-floor 95] [--batch-size 1]

Every input JSON carries top-level labels: eval ``size``, ``dataset``, ``variant``; benchmark
also ``device_label``; architecture-only benchmarks have no ``dataset``. Each benchmark cell
names its protocol (paper, or nash = NASH's beam 4 / batch 32), mode (fixed / natural output
length) and engine (eager / compiled). Speedups divide medians of cells of the same device,
protocol, mode, engine and batch size. Written under --out-dir (``{x}`` are labels found in the
inputs; P = {device}_{protocol}_{mode}):

  tables/retention_{dataset}                  Tables 5-7: R-2 and retention R per size
  tables/detail_{size}_{dataset}              Tables 16-24: R-1, R-2, RSL, R-L, GenL + impact
  tables/nash_{size}_{dataset}                NASH at equal budget: sparsities, steps and
                                              examples, R-2 (from each eval's record)
  tables/speed_P_{engine}_{size}_{dataset}    Tables 10, 25-33: median ms, spread, speedup per BS
  tables/speedup_summary_P_{engine}           Tables 8-9 (+ NASH Table 1): impact, R-L, speedup
                                              at the smallest BS for every size/dataset
  tables/speedup_by_engine_P_{size}_{dataset} speedup vs e6d6, engines side by side
  tables/compiled_vs_eager_P_{size}_{dataset} compiled / eager median per variant (both timed)
  tables/arch_speed_P_{engine}                architecture-only params, median ms, speedup
  tables/benchmark_cells                      every cell: all statistics, flags and reasons
  tables/pareto_{size}_{dataset}              R-2 vs median latency and the Pareto front
  tables/recommendation                       the variant the report settings pick, and why
  figures/fig1_quality_vs_speedup_P_{engine}          Figure 1 (every size x dataset)
  figures/fig3_rouge2_vs_layers_{dataset}             Figure 3
  figures/fig5_speedup_vs_batch_P_{engine}            Figure 5 (every size x dataset)
  figures/fig5_arch_speedup_vs_batch_P_{engine}       Figure 5 for architecture-only runs
  figures/pareto_{size}_{dataset}                     the front, the recommended variant
  disturbed_benchmarks.txt                    benchmark JSONs with a disturbed cell, to rerun
  report.json                                 sidecar: inputs, settings and files written

Tables are .csv, .md and .html, figures .png and .pdf. A cell the benchmark flagged as
disturbed has a `disturbed` column in CSV and a † in Markdown/HTML (explained below the table),
and so does its speedup and every speedup divided by a disturbed e6d6 cell; figures leave
those cells out and say how many. Metrics are printed as the eval stage stored them. Files of
these names left by an earlier run are removed first, so the folder shows only this run's.
"""

from __future__ import annotations

import argparse
import html
import logging
import math
import numbers
import shlex
import time
from pathlib import Path

import pandas as pd

from asymprune import settings
from asymprune import tables as T
from asymprune.provenance import make_sidecar, read_json, write_json

log = logging.getLogger("asymprune.report")

TABLE_PREFIXES = ("retention_", "detail_", "nash_", "speed_", "speedup_summary_", "precision_",
                  "speedup_by_engine_", "compiled_vs_eager_", "arch_speed_", "benchmark_cells",
                  "pareto_", "recommendation")
TABLE_SUFFIXES = (".csv", ".md", ".html")
FIGURE_PREFIXES = ("fig1_", "fig3_", "fig5_", "pareto_")
DISTURBED_LIST = "disturbed_benchmarks.txt"

GROUP_STYLE = {  # colormap, marker and legend label of each kind of variant
    "baseline": ("Greys", "*", "unpruned (e6d6)"),
    "decoder": ("Blues", "o", "decoder only"),
    "encoder": ("Oranges", "s", "encoder only"),
    "both": ("Greens", "^", "encoder + decoder"),
    "other": ("Greys", "D", "other e/d"),
    "nash": ("Purples", "P", "NASH"),
    "budget": ("Reds", "X", "depth variant at NASH's budget"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asymprune.report", description=__doc__,
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
    p.add_argument("--baseline", default="e6d6",
                   help="variant every impact, retention and speedup is relative to")
    p.add_argument("--configfile", action="append", default=[],
                   help="the workflow's config file(s), for the printed command that reruns "
                        "disturbed benchmarks (the workflow passes them; repeat)")
    settings.add_arguments(p, settings.Report)
    args = p.parse_args(argv)
    settings.resolve(settings.Report, args, p)
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
    return args


# ----------------------------------------------------------------------------- writing

def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{value:,}"  # 60,511,616 parameters read at a glance
    return str(value)


def render(df: pd.DataFrame) -> pd.DataFrame:
    """The table's cells as text: two decimals for floats, grouped integers, blank for a cell
    with no value, and a † after a number its mark column (``df.attrs["marks"]``) flags; the
    mark columns themselves are left out (the † says it)."""
    marks = df.attrs.get("marks", {})
    cells = df.astype(object).map(_cell)
    for column, flag in marks.items():
        flagged = df[flag].fillna(False).astype(bool)
        cells.loc[flagged, column] = cells.loc[flagged, column] + T.DAGGER
    return cells.drop(columns=list(marks.values()))


def _numeric(column: pd.Series) -> bool:
    values = column.dropna()
    return not values.empty and all(isinstance(v, numbers.Number) for v in values)


def to_markdown(df: pd.DataFrame) -> str:
    """The rendered table (first, label column left-aligned, numbers right-aligned), with its
    title above and its notes (what † means, each disturbed cell's reasons) below."""
    cells = render(df)
    # labels (the first column and any text column: variant, kind, reason) left, numbers right
    align = ["left"] + ["left" if df[c].dtype == object and not _numeric(df[c]) else "right"
                        for c in cells.columns[1:]]
    body = cells.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
    title = df.attrs.get("title")
    notes = df.attrs.get("notes", [])
    return ((f"**{title}**\n\n" if title else "") + body
            + "".join(f"\n{note}\n" for note in notes))


def to_html(df: pd.DataFrame, name: str) -> str:
    """A standalone page of the rendered table (what the Snakemake report shows inline)."""
    cells = render(df)
    title = df.attrs.get("title")
    notes = df.attrs.get("notes", [])
    parts = [f"<h3>{html.escape(title)}</h3>"] if title else []
    parts.append(cells.to_html(index=False, border=0))
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "th,td{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd} "
             "th:first-child,td:first-child{text-align:left}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(name)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_table(df: pd.DataFrame, tables_dir: Path, name: str, written: list[Path]) -> None:
    csv, md, page = (tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "html"))
    df.to_csv(csv, index=False, float_format="%.6f")
    md.write_text(to_markdown(df))
    page.write_text(to_html(df, name))
    written += [csv, md, page]


def save_figure(fig, figures_dir: Path, name: str, written: list[Path]) -> None:
    png, pdf = figures_dir / f"{name}.png", figures_dir / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    # No creation date in the PDF: the same inputs give the same bytes.
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    written += [png, pdf]


def clear_stale(folder: Path, prefixes: tuple[str, ...], suffixes: tuple[str, ...]) -> None:
    """Remove this stage's own outputs of an earlier run (only names it writes)."""
    for f in folder.glob("*"):
        if f.is_file() and f.name.startswith(prefixes) and f.suffix in suffixes:
            f.unlink()


# ----------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def variant_colors(variants: list[str], baseline: str) -> dict[str, tuple]:
    """One colour per variant: a shade of its group's colormap, deeper = more pruned."""
    plt = _pyplot()
    colors = {}
    by_group: dict[str, list[str]] = {}
    for v in T.sort_variants(variants):
        by_group.setdefault(T.variant_group(v, baseline), []).append(v)
    for group, members in by_group.items():
        cmap = plt.get_cmap(GROUP_STYLE[group][0])
        for i, v in enumerate(members):
            # shades from 0.45 to 0.95 of the map: light enough to tell apart, never white
            colors[v] = cmap(0.45 + 0.5 * (i + 1) / len(members)) if group != "baseline" \
                else (0.0, 0.0, 0.0, 1.0)
    return colors


def _grid(plt, n_rows: int, n_cols: int, panel_height: float = 3.6):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.4 * n_cols, panel_height * n_rows),
                             squeeze=False, layout="constrained")
    return fig, axes


def _group_legend(fig, groups: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker=GROUP_STYLE[g][1], markersize=8,
                      color=_pyplot().get_cmap(GROUP_STYLE[g][0])(0.8) if g != "baseline"
                      else "black", label=GROUP_STYLE[g][2]) for g in T.GROUPS if g in groups]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


# Label offsets in points, tried in turn: right of the marker first (where a reader looks),
# then left, then further above / below.
LABEL_OFFSETS = ((4, 2), (6, -11), (-6, 2), (-6, -11), (8, 11), (8, -19), (-8, 11), (-8, -19),
                 (10, 20), (10, -28))


def place_labels(fig, panels: list[tuple[object, list[tuple[float, float, str]]]],
                 fontsize: float = 7) -> None:
    """Label the scatter points of every panel, trying a few offsets so labels do not sit on
    each other.

    Called once the figure is complete (titles, axis labels, legends), so one draw fixes every
    panel's limits and data -> pixel transform: a draw per panel cost a whole-figure layout
    each, 4 panels = 4 extra layouts, most of a report's time. Greedy in the order given: each
    label takes the first offset (in points) whose box, about 0.6 x fontsize wide per character
    and 1.2 x fontsize tall, overlaps no label already placed and no marker (a 6-point
    square); if none is free it takes the first offset anyway.
    """
    fig.canvas.draw()
    for ax, points in panels:
        _place_panel_labels(ax, points, fontsize)


def _place_panel_labels(ax, points: list[tuple[float, float, str]], fontsize: float) -> None:
    px_per_pt = ax.figure.dpi / 72
    xys = [ax.transData.transform((x, y)) for x, y, _ in points]
    taken = [(px - 3 * px_per_pt, py - 3 * px_per_pt, px + 3 * px_per_pt, py + 3 * px_per_pt)
             for px, py in xys]
    for (px, py), (x, y, text) in zip(xys, points):
        w, h = 0.6 * fontsize * len(text) * px_per_pt, 1.2 * fontsize * px_per_pt
        chosen = None
        for dx, dy in LABEL_OFFSETS:
            x0 = px + dx * px_per_pt - (w if dx < 0 else 0)
            y0 = py + dy * px_per_pt
            box = (x0, y0, x0 + w, y0 + h)
            if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3]
                       for t in taken):
                chosen = (dx, dy, box)
                break
        if chosen is None:
            dx, dy = LABEL_OFFSETS[0]
            chosen = (dx, dy, (px + dx * px_per_pt, py + dy * px_per_pt,
                               px + dx * px_per_pt + w, py + dy * px_per_pt + h))
        dx, dy, box = chosen
        taken.append(box)
        # a label moved away from its first spot gets a thin leader line to its marker
        leader = None if (dx, dy) == LABEL_OFFSETS[0] else dict(
            arrowstyle="-", color="0.5", linewidth=0.5, shrinkA=0, shrinkB=3)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha="right" if dx < 0 else "left", va="bottom", arrowprops=leader)


def plotted_points(cells: pd.DataFrame, flag: str = "speedup disturbed"
                   ) -> tuple[pd.DataFrame, int]:
    """The cells a figure may draw and how many it must leave out: a figure never plots a
    cell whose ``flag`` is set (``speedup disturbed`` for speedups, ``disturbed`` for
    latencies)."""
    out = cells[flag].astype(bool)
    return cells[~out], int(out.sum())


def left_out_text(n: int) -> str:
    return f"{n} disturbed cell{'' if n == 1 else 's'} left out"


def figure1(sp: pd.DataFrame, title: str, batch_size: int, baseline: str):
    """Quality loss (R-2 impact %) vs speedup at one batch size, per size x dataset."""
    plt = _pyplot()
    sizes, datasets = T.sort_sizes(sp["size"]), sorted(sp["dataset"].unique())
    fig, axes = _grid(plt, len(sizes), len(datasets), panel_height=4.4)  # tall: 17 labels
    colors = variant_colors(list(sp["variant"]), baseline)
    labelled = []
    for i, size in enumerate(sizes):
        for j, dataset in enumerate(datasets):
            ax = axes[i][j]
            d = sp[(sp["size"] == size) & (sp["dataset"] == dataset)]
            if d.empty:
                ax.set_axis_off()
                continue
            ax.axhline(0, color="0.7", linewidth=0.8, zorder=0)
            ax.axvline(1, color="0.7", linewidth=0.8, zorder=0)
            points = []
            for row in d.to_dict("records"):
                xy = (row["speedup"], row["impact (%)"])
                marker = GROUP_STYLE[row["group"]][1]
                ax.scatter(*xy, color=colors[row["variant"]], marker=marker,
                           s=70 if marker == "*" else 36, edgecolor="black", linewidth=0.4,
                           zorder=3)
                points.append((*xy, row["variant"]))
            ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
            labelled.append((ax, points))
            ax.set_title(f"{size} / {dataset}")
            ax.set_xlabel(f"speedup vs {baseline} (batch size {batch_size})")
            ax.set_ylabel("R-2 change vs baseline (%)")
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    _group_legend(fig, list(sp["group"].unique()))
    place_labels(fig, labelled)
    return fig


def figure3(ev: pd.DataFrame, dataset: str, baseline: str):
    """R-2 vs layers kept (sixths): per size, lines for encoder-only, decoder-only and both."""
    plt = _pyplot()
    d = ev[ev["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    size_colors = plt.get_cmap("tab10")
    styles = {"encoder": ("--", "s", lambda k: f"e{k}d6"),
              "decoder": ("-", "o", lambda k: f"e6d{k}"),
              "both": (":", "^", lambda k: f"e{k}d{k}")}
    for si, size in enumerate(T.sort_sizes(d["size"])):
        ds = d[d["size"] == size].set_index("variant")["rouge2"]
        for kind, (ls, marker, name) in styles.items():
            ks = [k for k in range(1, 7) if name(k) in ds.index]
            if len(ks) < 2:
                continue
            ax.plot(ks, [ds[name(k)] for k in ks], linestyle=ls, marker=marker,
                    color=size_colors(si), label=f"{size}: {kind} pruned")
    ax.set_xticks(range(1, 7), [f"{k}/6" for k in range(1, 7)])
    ax.set_xlabel("layers kept (sixths of the pruned stack)")
    ax.set_ylabel("ROUGE-2")
    ax.set_title(f"Compression, model size and R-2 on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(T.sort_sizes(d["size"]))), loc="best")
    return fig


def figure5(sp: pd.DataFrame, title: str, panels: list[tuple[str, str | None]], baseline: str):
    """Speedup vs batch size, one line per variant, one panel per (size, dataset): rows are
    sizes and columns datasets; without datasets (architecture-only) the sizes sit in a row.
    ``panels`` come from all cells, so a panel whose cells were all left out stays, empty."""
    plt = _pyplot()
    datasets = sorted({p[1] for p in panels}, key=lambda x: "" if x is None else x)
    sizes = T.sort_sizes(p[0] for p in panels)
    by_row = datasets == [None]
    fig, axes = _grid(plt, 1, len(sizes)) if by_row else _grid(plt, len(sizes), len(datasets))
    colors = variant_colors(list(sp["variant"]), baseline)
    for i, size in enumerate(sizes):
        for j, dataset in enumerate(datasets):
            ax = axes[0][i] if by_row else axes[i][j]
            d = sp[sp["size"] == size]
            if dataset is not None:
                d = d[d["dataset"] == dataset]
            if d.empty:
                ax.set_axis_off()
                continue
            batch_sizes = sorted(d["batch_size"].unique())
            for v in T.sort_variants(d["variant"]):
                dv = d[d["variant"] == v].sort_values("batch_size")
                group = T.variant_group(v, baseline)
                ax.plot(dv["batch_size"], dv["speedup"], marker=GROUP_STYLE[group][1],
                        markersize=4, color=colors[v], label=v,
                        linestyle="--" if group == "baseline" else "-")
            ax.set_xscale("log", base=2)
            ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
            ax.minorticks_off()
            ax.set_title(size if dataset is None else f"{size} / {dataset}")
            ax.set_xlabel("batch size")
            ax.set_ylabel(f"speedup vs {baseline}")
            ax.grid(alpha=0.3)
    handles: dict = {}
    for ax in axes.flat:  # one legend for all panels, every variant once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = T.sort_variants(handles)
    # Below the panels, 4 entries per panel column: 16 variants in a 2-panel row take 2 lines.
    ncol = max(1, min(len(labels), 4 * axes.shape[1]))
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
               ncol=ncol, fontsize=8, frameon=False)
    fig.set_figheight(fig.get_figheight() + 0.2 * math.ceil(len(labels) / ncol))
    fig.suptitle(title)
    return fig


ENGINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")


def pareto_figure(table: pd.DataFrame, title: str,
                  recommended: dict[str, tuple[str, str]], budget_ms: float | None,
                  floor_r2: float | None, baseline: str):
    """R-2 vs median latency, one panel per device, every (variant, engine) that is
    undisturbed and scored: a marker per engine, a colour per variant, the one Pareto front
    over all of them as a staircase (at a latency between two front points the best R-2 one
    can have is the faster point's), the recommended pair ringed, the budget and the floor
    (in R-2: floor % x the baseline's R-2) as lines."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    scored = table[table["R-2"].notna()]
    points, n_out = plotted_points(scored, "disturbed")
    n_unscored = len(table) - len(scored)
    engines = T.sort_engines(table["engine"])
    markers = {e: ENGINE_MARKERS[i % len(ENGINE_MARKERS)] for i, e in enumerate(engines)}
    devices = sorted(table["device"].unique())
    fig, axes = _grid(plt, 1, len(devices), panel_height=4.8)
    colors = variant_colors(list(table["variant"]), baseline)
    labelled = []
    for ax, device in zip(axes[0], devices):
        d = points[points["device"] == device]
        if d.empty:
            ax.set_axis_off()
            continue
        labels = []
        for row in d.to_dict("records"):
            xy = (row["median ms"], row["R-2"])
            ax.scatter(*xy, color=colors[row["variant"]], marker=markers[row["engine"]],
                       s=60 if row["on_front"] else 30, zorder=3,
                       edgecolor="black", linewidth=1.2 if row["on_front"] else 0.3)
            if row["on_front"]:  # label the front only: 22 variants x 4 engines overlap
                labels.append((*xy, f"{row['variant']} {row['engine']}"))
        front = d[d["on_front"]].sort_values("median ms")
        ax.plot(front["median ms"], front["R-2"], drawstyle="steps-post", color="crimson",
                linewidth=1.2, zorder=2)
        extra = [Line2D([], [], linestyle="", marker=markers[e], color="0.5",
                        markeredgecolor="black", label=e) for e in engines
                 if (d["engine"] == e).any()]
        extra.append(Line2D([], [], color="crimson", linewidth=1.2, label="Pareto front"))
        chosen = recommended.get(device)
        if chosen is not None:
            r = d[(d["variant"] == chosen[0]) & (d["engine"] == chosen[1])].iloc[0]
            ax.scatter(r["median ms"], r["R-2"], s=320, facecolors="none", edgecolors="red",
                       linewidths=2, zorder=4)
            extra.append(Line2D([], [], linestyle="", marker="o", markersize=12,
                                markerfacecolor="none", markeredgecolor="red",
                                label=f"recommended: {chosen[0]} on {chosen[1]}"))
        if budget_ms is not None:
            ax.axvline(budget_ms, color="0.4", linestyle=":", linewidth=1)
            extra.append(Line2D([], [], color="0.4", linestyle=":",
                                label=f"latency budget {budget_ms:g} ms"))
        if floor_r2 is not None and math.isfinite(floor_r2):
            ax.axhline(floor_r2, color="0.4", linestyle="--", linewidth=1)
            extra.append(Line2D([], [], color="0.4", linestyle="--",
                                label=f"quality floor (R-2 {floor_r2:.2f})"))
        ax.set_xscale("log")  # engines differ by 2-5x: a linear axis crowds the fast ones
        ax.margins(x=0.12, y=0.1)
        labelled.append((ax, labels))
        ax.legend(handles=extra, fontsize=7, loc="lower right")
        ax.set_title(f"{device}: every variant x engine (marker = engine)")
        ax.set_xlabel("median latency (ms, log scale)")
        ax.set_ylabel("ROUGE-2")
        ax.grid(alpha=0.3)
    unscored = (f"; {n_unscored} timed but not evaluated (no ROUGE) left out"
                if n_unscored else "")
    fig.suptitle(f"{title}\n{left_out_text(n_out)}{unscored}")
    place_labels(fig, labelled)
    return fig


# ----------------------------------------------------------------------------- main

def _load(files: list[Path]) -> list[T.Record]:
    return [(str(f), read_json(f)) for f in files]


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


def _named(prefix: str, key: tuple) -> str:
    return prefix + "_".join(key)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    start = time.time()
    base = args.baseline
    T.variant_key(base)
    budget, floor, batch_size = args.latency_budget_ms, args.quality_floor, args.batch_size

    eval_records = _load(args.eval)
    ev = T.eval_frame(eval_records) if args.eval else None
    eng = T.engine_eval_frame(_load(args.eval_engines)) if args.eval_engines else None
    bench = T.bench_frame(_load(args.bench)) if args.bench else None
    arch = T.bench_frame(_load(args.bench_arch), with_dataset=False) if args.bench_arch else None

    # All the math first: a missing baseline fails before any file is touched.
    tabs: dict[str, pd.DataFrame] = {}
    sp = arch_sp = recommendation = None
    paretos: dict[tuple[str, str], pd.DataFrame] = {}
    if ev is not None:
        for dataset, t in T.retention_tables(ev, base).items():
            tabs[f"retention_{dataset}"] = t
        for (size, dataset), t in T.detail_tables(ev, base, bench).items():
            tabs[f"detail_{size}_{dataset}"] = t
        for (size, dataset), t in T.nash_tables(eval_records, ev, base).items():
            tabs[f"nash_{size}_{dataset}"] = t
    if eng is not None:
        for (size, dataset), t in T.precision_tables(ev, eng, base).items():
            tabs[f"precision_{size}_{dataset}"] = t
    if bench is not None:
        sp = T.speed_frame(ev, bench, base)
        for key, t in T.speed_tables(sp, base).items():
            tabs[_named("speed_", key)] = t
        for key, t in T.summary_tables(sp, base).items():
            tabs[_named("speedup_summary_", key)] = t
        for key, t in T.engine_tables(sp, base).items():
            tabs[_named("speedup_by_engine_", key)] = t
        for key, t in T.engine_ratio_tables(sp, base).items():
            tabs[_named("compiled_vs_eager_", key)] = t
        paretos = T.pareto_tables(sp, ev, batch_size, base, eng)
        for (size, dataset), t in paretos.items():
            tabs[f"pareto_{size}_{dataset}"] = t
        recommendation = T.recommendation_table(paretos, budget, floor, batch_size, base)
        tabs["recommendation"] = recommendation
    elif budget is not None or floor is not None:
        log.warning("report.latency_budget_ms / report.quality_floor are set but there are no "
                    "--bench files (benchmark.enabled false?): no recommendation")
    if arch is not None:
        arch_sp = T.arch_frame(arch, base)
        for key, t in T.arch_tables(arch_sp, base).items():
            tabs[_named("arch_speed_", key)] = t
    cell_frames = [f for f in (sp, arch_sp) if f is not None]
    if cell_frames:
        tabs["benchmark_cells"] = T.cells_table(cell_frames, base)
    disturbed = disturbed_files(cell_frames)
    disturbed_list = args.out_dir / DISTURBED_LIST
    rerun = rerun_command(disturbed_list, disturbed, args.configfile) if disturbed else None
    if rerun is not None:
        tabs["benchmark_cells"].attrs["notes"].append(
            f"{len(disturbed)} benchmark files have disturbed cells; rerun them (and this "
            f"report) with: {rerun}")

    tables_dir, figures_dir = args.out_dir / "tables", args.out_dir / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    clear_stale(tables_dir, TABLE_PREFIXES, TABLE_SUFFIXES)
    clear_stale(figures_dir, FIGURE_PREFIXES, (".png", ".pdf"))
    written: list[Path] = []
    for name, t in tabs.items():
        write_table(t, tables_dir, name, written)

    def draw(name: str, n_out: int, points: pd.DataFrame, make) -> None:
        if points.empty:
            log.warning("figure %s not drawn: all of its %d cells are disturbed", name, n_out)
            return
        save_figure(make(), figures_dir, name, written)

    if ev is not None:
        for dataset in sorted(ev["dataset"].unique()):
            save_figure(figure3(ev, dataset, base), figures_dir, f"fig3_rouge2_vs_layers_{dataset}",
                        written)
    if sp is not None:
        for key, g in sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
            device, protocol, mode, engine = key
            what = f"{T.protocol_label(protocol, g)}; {mode} output length; {engine} engine; {device}"
            bs = int(g["batch_size"].min())
            points, n_out = plotted_points(g[g["batch_size"] == bs])
            draw(_named("fig1_quality_vs_speedup_", key), n_out, points,
                 lambda: figure1(points, f"Quality vs speedup\n({what})\n{left_out_text(n_out)}",
                                 bs, base))
            if g["batch_size"].nunique() < 2:
                log.info("no speedup-vs-batch figure for %s: one batch size", "/".join(key))
                continue
            points5, n_out5 = plotted_points(g)
            panels = list(g[["size", "dataset"]].drop_duplicates().itertuples(index=False))
            draw(_named("fig5_speedup_vs_batch_", key), n_out5, points5,
                 lambda: figure5(points5, f"Speedup vs batch size\n({what})\n"
                                          f"{left_out_text(n_out5)}", panels, base))
    if arch_sp is not None:
        for key, g in arch_sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
            device, protocol, mode, engine = key
            if g["batch_size"].nunique() < 2:
                log.info("no architecture-only speedup-vs-batch figure for %s: one batch size",
                         "/".join(key))
                continue
            points, n_out = plotted_points(g)
            panels = [(s, None) for s in T.sort_sizes(g["size"])]
            title = (f"Architecture-only speedup vs batch size\n({T.protocol_label(protocol, g)}; "
                     f"{mode} output length; {engine} engine; random weights; {device})\n"
                     f"{left_out_text(n_out)}")
            draw(_named("fig5_arch_speedup_vs_batch_", key), n_out, points,
                 lambda: figure5(points, title, panels, base))
    for (size, dataset), t in paretos.items():
        rec = recommendation[(recommendation["size"] == size)
                             & (recommendation["dataset"] == dataset)]
        chosen = {r["device"]: (r["variant"], r["engine"]) for r in rec.to_dict("records")
                  if r["variant"] is not None and not pd.isna(r["variant"])}
        base_r2 = ev[(ev["size"] == size) & (ev["dataset"] == dataset)
                     & (ev["variant"] == base)]["rouge2"].iloc[0]
        # the floor is a retention in % of the baseline's R-2: 95 % of 20.0 -> R-2 19.0
        floor_r2 = None if floor is None else floor * base_r2 / 100
        save_figure(pareto_figure(t, t.attrs["title"], chosen, budget, floor_r2, base),
                    figures_dir, f"pareto_{size}_{dataset}", written)

    disturbed_list.write_text("".join(f"{f}\n" for f in disturbed))
    if disturbed:
        log.warning("%d benchmark files have disturbed cells (listed in %s); rerun them with:\n"
                    "  %s", len(disturbed), disturbed_list, rerun)
    elif cell_frames:
        log.info("no disturbed benchmark cell")
    if recommendation is not None:
        for r in recommendation.to_dict("records"):
            log.info("recommendation for %s/%s on %s: %s (%s)", r["size"], r["dataset"],
                     r["device"], f"{r['variant']} on {r['engine']}" if r["variant"] else "none",
                     r["reason"])

    rel = sorted(str(p.relative_to(args.out_dir)) for p in written)
    sidecar = make_sidecar(
        "report", vars(args),
        samples={"eval_files": len(args.eval), "eval_engine_files": len(args.eval_engines),
                 "bench_files": len(args.bench),
                 "bench_arch_files": len(args.bench_arch)},
        wall_time_s=time.time() - start, files=rel, disturbed_benchmarks=disturbed,
        rerun_disturbed_command=rerun,
        recommendation=([] if recommendation is None
                        else recommendation.astype(object).where(recommendation.notna(), None)
                        .to_dict("records")))
    write_json(args.out_dir / "report.json", sidecar)
    log.info("wrote %d tables and figures under %s", len(rel), args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
