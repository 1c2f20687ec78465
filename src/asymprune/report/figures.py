"""The report's figures (matplotlib, drawn off-screen): Campos & Zhai's Figures 1, 3 and 5,
and the Pareto front with the recommended variant. A figure never plots a disturbed cell; its
title says how many it left out."""

from __future__ import annotations

import math

import pandas as pd

from asymprune.report.order import GROUPS, sort_engines, sort_sizes, sort_variants, variant_group

GROUP_STYLE = {  # colormap, marker and legend label of each kind of variant
    "baseline": ("Greys", "*", "unpruned (e6d6)"),
    "decoder": ("Blues", "o", "decoder only"),
    "encoder": ("Oranges", "s", "encoder only"),
    "both": ("Greens", "^", "encoder + decoder"),
    "other": ("Greys", "D", "other e/d"),
    "nash": ("Purples", "P", "NASH"),
    "budget": ("Reds", "X", "depth variant at NASH's budget"),
}


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
    for v in sort_variants(variants):
        by_group.setdefault(variant_group(v, baseline), []).append(v)
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
                      else "black", label=GROUP_STYLE[g][2]) for g in GROUPS if g in groups]
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
    sizes, datasets = sort_sizes(sp["size"]), sorted(sp["dataset"].unique())
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
    for si, size in enumerate(sort_sizes(d["size"])):
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
    ax.legend(fontsize=8, ncol=max(1, len(sort_sizes(d["size"]))), loc="best")
    return fig


def figure5(sp: pd.DataFrame, title: str, panels: list[tuple[str, str | None]], baseline: str):
    """Speedup vs batch size, one line per variant, one panel per (size, dataset): rows are
    sizes and columns datasets; without datasets (architecture-only) the sizes sit in a row.
    ``panels`` come from all cells, so a panel whose cells were all left out stays, empty."""
    plt = _pyplot()
    datasets = sorted({p[1] for p in panels}, key=lambda x: "" if x is None else x)
    sizes = sort_sizes(p[0] for p in panels)
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
            for v in sort_variants(d["variant"]):
                dv = d[d["variant"] == v].sort_values("batch_size")
                group = variant_group(v, baseline)
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
    labels = sort_variants(handles)
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
    engines = sort_engines(table["engine"])
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
