"""Speed tables: latency and speedup per device, protocol, mode, engine, size and data set
(Campos & Zhai Tables 8-10, 25-33), engines side by side, architecture-only runs, and every
benchmark cell in one table. Every disturbed cell and speedup is marked (``tables.judge``)."""

from __future__ import annotations

import pandas as pd

from asymprune.report.order import (ENGINE_ORDER, sixths, size_key, sort_engines, sort_sizes,
                                    sort_variants)
from asymprune.report.tables import _annotate, _order, _put, _title, _variant_rows
from asymprune.variants import TEACHER


def speed_tables(sp: pd.DataFrame, baseline: str = TEACHER) -> dict[tuple, pd.DataFrame]:
    """Tables 8-10 / 25-33: per device, protocol, mode, engine, size, dataset; per batch size
    the median latency, the spread of the timed runs and the speedup vs the baseline."""
    out = {}
    keys = ["device", "protocol", "mode", "engine", "size", "dataset"]
    for key, g in sp.groupby(keys, sort=True):
        device, protocol, mode, engine, size, dataset = key
        table = _variant_rows(g, ["variant", "lenc", "ldec", "R-2", "impact (%)"])
        marks: dict[str, str] = {}
        for bs in sorted(g["batch_size"].unique()):
            at = g[g["batch_size"] == bs].set_index("variant")
            _put(table, marks, f"BS{bs} median ms", at["median_ms"], at["disturbed"])
            _put(table, marks, f"BS{bs} spread", at["spread"])
            _put(table, marks, f"BS{bs} speedup", at["speedup"], at["speedup disturbed"])
            if mode != "fixed":  # in fixed mode every row decoded exactly --new-tokens
                _put(table, marks, f"BS{bs} new tokens", at["new_tokens_mean"])
        title = _title("Latency and speedup", g, protocol, mode, device, engine,
                       f"{size}/{dataset}")
        out[key] = _annotate(table, title, marks, g, baseline)
    return out


def summary_tables(sp: pd.DataFrame, baseline: str = TEACHER) -> dict[tuple, pd.DataFrame]:
    """Tables 8-9 layout: per device, protocol, mode and engine, R-2 impact and speedup at the
    smallest batch size (1 in the paper), one column group per size/dataset; NASH rows also
    show R-L (the metric of the NASH paper's Table 1)."""
    out = {}
    for key, g in sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
        device, protocol, mode, engine = key
        table = pd.DataFrame({"variant": sort_variants(g["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        marks: dict[str, str] = {}
        shown = []
        pairs = g[["size", "dataset"]].drop_duplicates()
        for size, dataset in sorted(pairs.itertuples(index=False),
                                    key=lambda p: (size_key(p[0]), p[1])):
            sd = g[(g["size"] == size) & (g["dataset"] == dataset)]
            bs = int(sd["batch_size"].min())
            cells = sd[sd["batch_size"] == bs]
            shown.append(cells)
            at = cells.set_index("variant")
            _put(table, marks, f"{size}/{dataset} impact (%)", at["impact (%)"])
            _put(table, marks, f"{size}/{dataset} R-L", at["R-L"])
            _put(table, marks, f"{size}/{dataset} speedup BS{bs}", at["speedup"],
                 at["speedup disturbed"])
        title = _title("Quality impact and speedup at the smallest batch size", g, protocol,
                       mode, device, engine)
        out[key] = _annotate(table, title, marks, pd.concat(shown), baseline)
    return out


def engine_tables(sp: pd.DataFrame, baseline: str = TEACHER) -> dict[tuple, pd.DataFrame]:
    """Speedup vs the baseline under each engine side by side (columns batch size x engine):
    does pruning the decoder still pay once the compiled engine has cut the per-token overhead
    that a deep decoder multiplies?"""
    out = {}
    for key, g in sp.groupby(["device", "protocol", "mode", "size", "dataset"], sort=True):
        device, protocol, mode, size, dataset = key
        table = _variant_rows(g, ["variant", "lenc", "ldec", "R-2", "impact (%)"])
        marks: dict[str, str] = {}
        for bs in sorted(g["batch_size"].unique()):
            for engine in sort_engines(g["engine"]):
                at = g[(g["batch_size"] == bs) & (g["engine"] == engine)].set_index("variant")
                _put(table, marks, f"BS{bs} {engine} speedup", at["speedup"],
                     at["speedup disturbed"])
        title = _title(f"Speedup vs {baseline} per engine (each engine's own {baseline})", g,
                       protocol, mode, device, where=f"{size}/{dataset}")
        out[key] = _annotate(table, title, marks, g, baseline)
    return out


def engine_ratio_tables(sp: pd.DataFrame, baseline: str = TEACHER) -> dict[tuple, pd.DataFrame]:
    """Where both engines were timed: per variant and batch size, compiled median / eager
    median (0.50 = the compiled engine takes half the time)."""
    out = {}
    eager, compiled = ENGINE_ORDER[:2]
    for key, g in sp.groupby(["device", "protocol", "mode", "size", "dataset"], sort=True):
        if not {eager, compiled} <= set(g["engine"]):
            continue
        device, protocol, mode, size, dataset = key
        g = g[g["engine"].isin([eager, compiled])]
        table = _variant_rows(g, ["variant", "lenc", "ldec"])
        marks: dict[str, str] = {}
        for bs in sorted(g["batch_size"].unique()):
            at = g[g["batch_size"] == bs]
            e = at[at["engine"] == eager].set_index("variant")
            c = at[at["engine"] == compiled].set_index("variant")
            _put(table, marks, f"BS{bs} {eager} ms", e["median_ms"], e["disturbed"])
            _put(table, marks, f"BS{bs} {compiled} ms", c["median_ms"], c["disturbed"])
            # NaN where a variant lacks one of the two cells: no ratio, shown blank
            either = pd.concat([e["disturbed"], c["disturbed"]], axis=1).any(axis=1)
            _put(table, marks, f"BS{bs} {compiled}/{eager}", c["median_ms"] / e["median_ms"],
                 either)
        title = _title(f"{compiled} vs {eager} engine, median latency", g, protocol, mode,
                       device, where=f"{size}/{dataset}")
        out[key] = _annotate(table, title, marks, g, baseline,
                             [f"{compiled}/{eager} = {compiled} median / {eager} median of the "
                              f"same variant and batch size; below 1 the {compiled} engine is "
                              f"faster."])
    return out


def arch_tables(sp: pd.DataFrame, baseline: str = TEACHER) -> dict[tuple, pd.DataFrame]:
    """Architecture-only: per device, protocol, mode and engine, params, median ms and speedup
    per size x batch size."""
    out = {}
    for key, g in sp.groupby(["device", "protocol", "mode", "engine"], sort=True):
        device, protocol, mode, engine = key
        table = pd.DataFrame({"variant": sort_variants(g["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        marks: dict[str, str] = {}
        for size in sort_sizes(g["size"]):
            gs = g[g["size"] == size]
            params = gs.drop_duplicates("variant").set_index("variant")["params"]
            table[f"{size} params"] = table["variant"].map(params).astype("Int64")
            for bs in sorted(gs["batch_size"].unique()):
                at = gs[gs["batch_size"] == bs].set_index("variant")
                _put(table, marks, f"{size} BS{bs} median ms", at["median_ms"], at["disturbed"])
                _put(table, marks, f"{size} BS{bs} speedup", at["speedup"],
                     at["speedup disturbed"])
        title = _title("Architecture-only latency (random weights)", g, protocol, mode, device,
                       engine)
        out[key] = _annotate(table, title, marks, g, baseline)
    return out


CELL_COLUMNS = {  # long-frame column -> label in the table of all cells
    "device": "device", "size": "size", "dataset": "dataset", "variant": "variant",
    "protocol": "protocol", "mode": "mode", "engine": "engine", "inputs": "inputs",
    "batch_size": "batch size", "num_beams": "beams", "median_ms": "median ms",
    "spread": "spread", "foreign_load": "foreign load", "mean_ms": "mean ms", "std_ms": "std ms",
    "min_ms": "min ms", "max_ms": "max ms", "new_tokens_mean": "new tokens",
    "speedup": "speedup", "disturbed": "disturbed", "speedup disturbed": "speedup disturbed",
    "why": "disturbed why", "file": "file"}


def cells_table(frames: list[pd.DataFrame], baseline: str = TEACHER) -> pd.DataFrame:
    """Every benchmark cell (trained and architecture-only) in one long table, with all its
    statistics, its speedup, both flags and the benchmark's reasons."""
    cells = pd.concat(frames, ignore_index=True)
    cells = _order(cells).sort_values(
        ["device", "size", "dataset", "protocol", "mode", "engine", "batch_size"], kind="stable")
    table = cells[list(CELL_COLUMNS)].rename(columns=CELL_COLUMNS).reset_index(drop=True)
    title = f"All benchmark cells (speedup = {baseline} median / variant median, same key)"
    return _annotate(table, title, {"median ms": "disturbed", "speedup": "speedup disturbed"},
                     cells, baseline)
