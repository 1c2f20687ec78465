"""Tables and figures of both papers from eval and benchmark sidecars (and nothing else).

  python -m asymprune.report --eval results/demo/eval/*/*/*.json \\
      --bench results/demo/bench/cpu/*/*/*.json --bench-arch results/demo/bench_arch/*/*/*.json \\
      --out-dir reports/demo

Every input JSON carries top-level labels: eval ``size``, ``dataset``, ``variant``; benchmark
also ``device_label``; architecture-only benchmarks have no ``dataset``. Written under
--out-dir (``{x}`` are the labels found in the inputs):

  tables/retention_{dataset}                    Tables 5-7: R-2 and retention R per size
  tables/detail_{size}_{dataset}                Tables 16-24: R-1, R-2, RSL, R-L, GenL + impact
  tables/speed_{device}_{mode}_{size}_{dataset} Tables 10, 25-33: impact, ms, std, speedup per BS
  tables/speedup_summary_{device}_{mode}        Tables 8-9 (+ NASH Table 1): impact, R-L,
                                                speedup at BS1 for every size/dataset
  tables/arch_speed_{device}_{mode}             architecture-only params, ms, speedup
  figures/fig1_quality_vs_speedup_{device}_{mode}       Figure 1 (every size x dataset)
  figures/fig3_rouge2_vs_layers_{dataset}               Figure 3
  figures/fig5_speedup_vs_batch_{device}_{mode}         Figure 5 (every size x dataset)
  figures/fig5_arch_speedup_vs_batch_{device}_{mode}    Figure 5 for architecture-only runs
  report.json                                           sidecar: inputs and files written

Tables are .csv and .md, figures .png and .pdf. Metrics are printed as the eval stage stored
them. Files of these names left by an earlier run are removed first, so the folder shows only
this run's tables.
"""

from __future__ import annotations

import argparse
import logging
import math
import numbers
import time
from pathlib import Path

import pandas as pd

from asymprune import tables as T
from asymprune.provenance import make_sidecar, read_json, write_json

log = logging.getLogger("asymprune.report")

TABLE_PREFIXES = ("retention_", "detail_", "nash_", "speed_", "speedup_summary_", "arch_speed_")
FIGURE_PREFIXES = ("fig1_", "fig3_", "fig5_")

GROUP_STYLE = {  # colormap, marker and legend label of each kind of variant
    "baseline": ("Greys", "*", "unpruned (e6d6)"),
    "decoder": ("Blues", "o", "decoder only"),
    "encoder": ("Oranges", "s", "encoder only"),
    "both": ("Greens", "^", "encoder + decoder"),
    "other": ("Greys", "D", "other e/d"),
    "nash": ("Purples", "P", "NASH"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asymprune.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", nargs="*", type=Path, default=[],
                   help="eval JSON sidecars (metrics + size/dataset/variant)")
    p.add_argument("--bench", nargs="*", type=Path, default=[],
                   help="benchmark JSON sidecars of trained models (needs --eval for impact)")
    p.add_argument("--bench-arch", nargs="*", type=Path, default=[],
                   help="architecture-only benchmark JSON sidecars (no dataset)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="report folder, e.g. reports/demo (tables/ and figures/ inside)")
    p.add_argument("--baseline", default="e6d6",
                   help="variant every impact, retention and speedup is relative to")
    args = p.parse_args(argv)
    if not args.eval and not args.bench_arch:
        p.error("nothing to report: give --eval files and/or --bench-arch files")
    if args.bench and not args.eval:
        p.error("--bench needs --eval: the speed tables show each variant's R-2 impact")
    for flag, files in (("--eval", args.eval), ("--bench", args.bench),
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


def to_markdown(df: pd.DataFrame) -> str:
    """Two decimals for floats, grouped integers, blank for a cell with no value; the first
    (label) column left-aligned, numbers right-aligned."""
    cells = df.astype(object).map(_cell)
    align = ("left",) + ("right",) * (len(df.columns) - 1)
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def write_table(df: pd.DataFrame, tables_dir: Path, name: str, written: list[Path]) -> None:
    csv, md = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    df.to_csv(csv, index=False, float_format="%.6f")
    md.write_text(to_markdown(df))
    written += [csv, md]


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


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Label scatter points, trying a few offsets so labels do not sit on each other.

    Greedy in the order given: each label takes the first offset (in points) whose box, about
    0.6 x fontsize wide per character and 1.2 x fontsize tall, overlaps no label already placed
    and no marker (a 6-point square); if none is free it takes the first offset anyway.
    """
    ax.figure.canvas.draw()  # fixes the axes limits and the data -> pixel transform
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


def figure1(sp: pd.DataFrame, device: str, mode: str, baseline: str):
    """Quality loss (R-2 impact %) vs speedup at the smallest batch size, per size x dataset."""
    plt = _pyplot()
    sizes, datasets = T.sort_sizes(sp["size"]), sorted(sp["dataset"].unique())
    fig, axes = _grid(plt, len(sizes), len(datasets), panel_height=4.4)  # tall: 17 labels
    colors = variant_colors(list(sp["variant"]), baseline)
    for i, size in enumerate(sizes):
        for j, dataset in enumerate(datasets):
            ax = axes[i][j]
            d = sp[(sp["size"] == size) & (sp["dataset"] == dataset)]
            if d.empty:
                ax.set_axis_off()
                continue
            bs = int(d["batch_size"].min())
            d = d[d["batch_size"] == bs]
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
            place_labels(ax, points)
            ax.set_title(f"{size} / {dataset}")
            ax.set_xlabel(f"speedup vs {baseline} (batch size {bs})")
            ax.set_ylabel("R-2 change vs baseline (%)")
            ax.grid(alpha=0.3)
    fig.suptitle(f"Quality vs speedup ({mode} output length, {device})")
    _group_legend(fig, list(sp["group"].unique()))
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
    sizes and columns datasets; without datasets (architecture-only) the sizes sit in a row."""
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


# ----------------------------------------------------------------------------- main

def _load(files: list[Path]) -> list[T.Record]:
    return [(str(f), read_json(f)) for f in files]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    start = time.time()
    base = args.baseline
    T.variant_key(base)

    eval_records = _load(args.eval)
    ev = T.eval_frame(eval_records) if args.eval else None
    bench = T.bench_frame(_load(args.bench)) if args.bench else None
    arch = T.bench_frame(_load(args.bench_arch), with_dataset=False) if args.bench_arch else None

    # All the math first: a missing baseline fails before any file is touched.
    tabs: dict[str, pd.DataFrame] = {}
    sp = arch_sp = None
    if ev is not None:
        for dataset, t in T.retention_tables(ev, base).items():
            tabs[f"retention_{dataset}"] = t
        for (size, dataset), t in T.detail_tables(ev, base, bench).items():
            tabs[f"detail_{size}_{dataset}"] = t
        for (size, dataset), t in T.nash_tables(eval_records, ev, base).items():
            tabs[f"nash_{size}_{dataset}"] = t
    if bench is not None:
        sp = T.speed_frame(ev, bench, base)
        for (device, mode, size, dataset), t in T.speed_tables(sp).items():
            tabs[f"speed_{device}_{mode}_{size}_{dataset}"] = t
        for (device, mode), t in T.summary_tables(sp).items():
            tabs[f"speedup_summary_{device}_{mode}"] = t
    if arch is not None:
        arch_sp = T.arch_frame(arch, base)
        for (device, mode), t in T.arch_tables(arch_sp).items():
            tabs[f"arch_speed_{device}_{mode}"] = t

    tables_dir, figures_dir = args.out_dir / "tables", args.out_dir / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    clear_stale(tables_dir, TABLE_PREFIXES, (".csv", ".md"))
    clear_stale(figures_dir, FIGURE_PREFIXES, (".png", ".pdf"))
    written: list[Path] = []
    for name, t in tabs.items():
        write_table(t, tables_dir, name, written)

    if ev is not None:
        for dataset in sorted(ev["dataset"].unique()):
            save_figure(figure3(ev, dataset, base), figures_dir, f"fig3_rouge2_vs_layers_{dataset}",
                        written)
    if sp is not None:
        for (device, mode), g in sp.groupby(["device", "mode"], sort=True):
            save_figure(figure1(g, device, mode, base), figures_dir,
                        f"fig1_quality_vs_speedup_{device}_{mode}", written)
            panels = list(g[["size", "dataset"]].drop_duplicates().itertuples(index=False))
            save_figure(figure5(g, f"Speedup vs batch size\n({mode} output length, {device})",
                                panels, base),
                        figures_dir, f"fig5_speedup_vs_batch_{device}_{mode}", written)
    if arch_sp is not None:
        for (device, mode), g in arch_sp.groupby(["device", "mode"], sort=True):
            panels = [(s, None) for s in T.sort_sizes(g["size"])]
            save_figure(figure5(g, f"Architecture-only speedup vs batch size\n({mode} output "
                                   f"length, random weights, {device})", panels, base),
                        figures_dir, f"fig5_arch_speedup_vs_batch_{device}_{mode}", written)

    rel = sorted(str(p.relative_to(args.out_dir)) for p in written)
    sidecar = make_sidecar(
        "report", vars(args),
        samples={"eval_files": len(args.eval), "bench_files": len(args.bench),
                 "bench_arch_files": len(args.bench_arch)},
        wall_time_s=time.time() - start, files=rel)
    write_json(args.out_dir / "report.json", sidecar)
    log.info("wrote %d tables and figures under %s", len(rel), args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
