"""Table math of the report: sidecar records -> pandas frames. No plotting, no file writing.

Definitions (as in Campos & Zhai):
  retention R  = 100 * R-2(variant) / R-2(baseline)                  (Tables 5-7)
  impact       = 100 * (metric(variant) / metric(baseline) - 1)      (Tables 8-10, 16-24)
  speedup      = mean latency(baseline) / mean latency(variant)       (same device, mode, batch)
e.g. R-2 28.90 vs 29.03: R = 99.55 %, impact = -0.45 %; 524 ms vs 293 ms: speedup 1.79.

The baseline is the unpruned teacher (``e6d6``) of the same size and dataset; a table that
needs it and does not find it raises, naming what is missing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from asymprune import variants

# Eval JSON "metrics" key -> column label of the paper's tables, in the paper's column order.
METRICS: dict[str, str] = {"rouge1": "R-1", "rouge2": "R-2", "rougeLsum": "RSL",
                           "rougeL": "R-L", "gen_len": "GenL"}
SIZE_ORDER = ("small", "base", "large")
GROUPS = variants.GROUPS
NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")  # labels end up in file names
BENCH_RESULT_KEYS = ("mode", "batch_size", "mean_ms", "std_ms", "median_ms", "new_tokens_mean")

Record = tuple[str, dict[str, Any]]  # (file it came from, parsed JSON)

log = logging.getLogger("asymprune.report")


# ----------------------------------------------------------------------------- ordering

def variant_key(variant: str) -> tuple:
    """Table order of a variant id (``asymprune.variants.sort_key``); an unknown id is an error."""
    return variants.sort_key(variant)


def size_key(size: str) -> tuple:
    return (0, SIZE_ORDER.index(size), "") if size in SIZE_ORDER else (1, 0, size)


def sort_variants(variants: Iterable[str]) -> list[str]:
    return sorted(set(variants), key=variant_key)


def sort_sizes(sizes: Iterable[str]) -> list[str]:
    return sorted(set(sizes), key=size_key)


def sixths(variant: str) -> tuple[int | None, int | None]:
    """(l_enc, l_dec) in sixths for e{E}d{D}; (None, None) for NASH (not a sixths variant)."""
    return variants.sixths(variant)


def variant_group(variant: str, baseline: str = "e6d6") -> str:
    """baseline, decoder (only the decoder pruned), encoder, both (symmetric), other, nash."""
    return variants.group(variant, baseline)


# ----------------------------------------------------------------------------- reading

def _label(path: str, obj: dict, key: str, hint: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: missing top-level {key!r} ({hint})")
    if not NAME_RE.match(value):
        raise ValueError(f"{path}: {key} {value!r} has characters unfit for a file name")
    return value


def _number(path: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {where} must be a finite number, got {value!r}")
    return float(value)


def eval_frame(records: list[Record]) -> pd.DataFrame:
    """One row per eval JSON: size, dataset, variant, group, lenc, ldec and the five metrics."""
    rows, seen = [], {}
    for path, obj in records:
        hint = "the workflow passes --size/--dataset/--variant to the evaluate stage"
        key = tuple(_label(path, obj, k, hint) for k in ("size", "dataset", "variant"))
        variant_key(key[2])
        if key in seen:
            raise ValueError(f"two eval files for size/dataset/variant {'/'.join(key)}: "
                             f"{seen[key]} and {path}")
        seen[key] = path
        metrics = obj.get("metrics")
        if not isinstance(metrics, dict):
            raise ValueError(f"{path}: no 'metrics' object")
        row = dict(zip(("size", "dataset", "variant"), key), file=path)
        for m in METRICS:
            if m not in metrics:
                raise ValueError(f"{path}: metrics has no {m!r}")
            row[m] = _number(path, f"metrics.{m}", metrics[m])
        rows.append(row)
    return _finish(pd.DataFrame(rows, columns=["size", "dataset", "variant", "file", *METRICS]))


def nash_tables(records: list[Record], ev: pd.DataFrame,
                baseline: str = "e6d6") -> dict[tuple[str, str], pd.DataFrame]:
    """NASH per size x dataset: target vs reached encoder sparsity, R-2 and its impact.

    The eval sidecar embeds the final model's sidecar (``model_sidecar``, from the final
    fine-tune), whose ``parent`` is the NASH stage's sidecar: the sparsity figures come from
    there, as the NASH stage measured them on the physically pruned encoder.
    """
    rows = []
    for path, obj in records:
        variant = obj.get("variant", "")
        if variants.group(variant, baseline) != "nash":
            continue
        nash = (obj.get("model_sidecar") or {}).get("parent") or {}
        if nash.get("stage") != "nash":
            raise ValueError(f"{path}: NASH variant {variant} without the NASH stage's sidecar "
                             f"under model_sidecar.parent")
        rows.append({
            "size": obj["size"], "dataset": obj["dataset"], "variant": variant,
            "decoder blocks": " ".join(map(str, nash["kept"]["decoder_blocks"])),
            "target sparsity (%)": 100 * _number(path, "target_sparsity", nash["target_sparsity"]),
            "reached sparsity (%)": 100 * _number(path, "reached_sparsity",
                                                  nash["reached_sparsity"]),
            "gates' expected sparsity (%)": 100 * _number(
                path, "expected_sparsity_final", nash["expected_sparsity_final"]),
            "params": nash["parameters"]["pruned"],
        })
    out = {}
    for (size, dataset), g in pd.DataFrame(rows).groupby(["size", "dataset"], sort=True) \
            if rows else []:
        d = ev[(ev["size"] == size) & (ev["dataset"] == dataset)]
        base = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")
        r2 = d.set_index("variant")["rouge2"]
        table = g.sort_values("variant").drop(columns=["size", "dataset"]).reset_index(drop=True)
        table["R-2"] = table["variant"].map(r2).to_numpy()
        table["R-2 impact (%)"] = [impact(v, base["rouge2"]) for v in table["R-2"]]
        out[(size, dataset)] = table
    return out


def bench_frame(records: list[Record], *, with_dataset: bool = True) -> pd.DataFrame:
    """One row per (bench JSON, result): labels, layer counts, params and latency stats."""
    rows, seen = [], {}
    keys = ("device_label", "size", "dataset", "variant") if with_dataset else (
        "device_label", "size", "variant")
    for path, obj in records:
        hint = "the workflow passes --size/--dataset/--variant/--device-label to the benchmark"
        labels = {k: _label(path, obj, k, hint) for k in keys}
        variant_key(labels["variant"])
        results = obj.get("results")
        if not isinstance(results, list) or not results:
            raise ValueError(f"{path}: no 'results' list")
        for i, r in enumerate(results):
            for k in BENCH_RESULT_KEYS:
                if k not in r:
                    raise ValueError(f"{path}: results[{i}] has no {k!r}")
            key = (*labels.values(), r["mode"], r["batch_size"])
            if key in seen:
                raise ValueError(f"two benchmark results for {key}: {seen[key]} and {path}")
            seen[key] = path
            row = {**labels, "mode": r["mode"], "batch_size": int(r["batch_size"]), "file": path,
                   "encoder_layers": obj.get("encoder_layers"),
                   "decoder_layers": obj.get("decoder_layers"), "params": obj.get("params")}
            for k in ("mean_ms", "std_ms", "median_ms", "new_tokens_mean"):
                row[k] = _number(path, f"results[{i}].{k}", r[k])
            rows.append(row)
    frame = pd.DataFrame(rows).rename(columns={"device_label": "device"})
    if not with_dataset:
        frame["dataset"] = None
    return _finish(frame)


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = frame.copy()
    frame["group"] = [variant_group(v) for v in frame["variant"]]
    frame["lenc"] = [sixths(v)[0] for v in frame["variant"]]
    frame["ldec"] = [sixths(v)[1] for v in frame["variant"]]
    frame["lenc"] = frame["lenc"].astype("Int64")
    frame["ldec"] = frame["ldec"].astype("Int64")
    return frame


# ----------------------------------------------------------------------------- math

def retention(value: float, base: float) -> float:
    """100 * value / base, in percent of the baseline (29.03 of 29.03 -> 100.0).

    A baseline of 0 (an untrained teacher, e.g. the micro test preset) leaves the ratio
    undefined: NaN, printed as nan in the tables and logged, never a made-up 0 or 100.
    """
    if base == 0:
        log.warning("baseline metric is 0: retention/impact undefined (nan)")
        return math.nan
    return 100.0 * value / base


def impact(value: float, base: float) -> float:
    """Percent change vs the baseline: 100 * (value / base - 1) (28.90 vs 29.03 -> -0.45)."""
    return retention(value, base) - 100.0


def speedup(base_ms: float, variant_ms: float) -> float:
    """How many times faster than the baseline: 524 ms / 293 ms -> 1.79."""
    if variant_ms <= 0:
        raise ValueError(f"latency must be positive, got {variant_ms}")
    return base_ms / variant_ms


def _baseline_row(frame: pd.DataFrame, baseline: str, what: str) -> pd.Series:
    rows = frame[frame["variant"] == baseline]
    if rows.empty:
        raise ValueError(f"missing baseline: no {baseline} {what}")
    return rows.iloc[0]


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("variant", key=lambda s: s.map(variant_key), kind="stable")


# ----------------------------------------------------------------------------- tables

def retention_tables(ev: pd.DataFrame, baseline: str = "e6d6") -> dict[str, pd.DataFrame]:
    """Tables 5-7: per dataset, R-2 and retention R per size; rows are variants."""
    out = {}
    for dataset, d in ev.groupby("dataset", sort=True):
        table = pd.DataFrame({"variant": sort_variants(d["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        for size in sort_sizes(d["size"]):
            ds = d[d["size"] == size].set_index("variant")
            base = _baseline_row(ds.reset_index(), baseline,
                                 f"eval for size {size}, dataset {dataset}")["rouge2"]
            r2 = table["variant"].map(ds["rouge2"])
            table[f"{size} R-2"] = r2
            table[f"{size} R (%)"] = [retention(v, base) if pd.notna(v) else math.nan for v in r2]
        out[dataset] = table
    return out


def detail_tables(ev: pd.DataFrame, baseline: str = "e6d6",
                  layers: pd.DataFrame | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """Tables 16-24: per size x dataset, every metric and its impact (% change vs baseline).

    ``layers`` (size, dataset, variant, encoder_layers, decoder_layers), from the benchmark
    sidecars, adds the absolute layer counts the paper's appendix tables show.
    """
    out = {}
    for (size, dataset), d in ev.groupby(["size", "dataset"], sort=True):
        base = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")
        d = _order(d)
        table = d[["variant", "lenc", "ldec"]].reset_index(drop=True)
        if layers is not None and not layers.empty:
            lay = layers[(layers["size"] == size) & (layers["dataset"] == dataset)]
            lay = lay.drop_duplicates("variant").set_index("variant")
            table["enc layers"] = table["variant"].map(lay["encoder_layers"]).astype("Int64")
            table["dec layers"] = table["variant"].map(lay["decoder_layers"]).astype("Int64")
        for m, label in METRICS.items():
            table[label] = d[m].to_numpy()
            table[f"{label} impact (%)"] = [impact(v, base[m]) for v in d[m]]
        out[(size, dataset)] = table
    return out


def _with_speedups(bench: pd.DataFrame, baseline: str, keys: list[str]) -> pd.DataFrame:
    """Adds a ``speedup`` column: baseline mean / variant mean within the same ``keys``."""
    parts = []
    for key, g in bench.groupby(keys, sort=False, dropna=False):
        what = "benchmark for " + ", ".join(f"{k} {v}" for k, v in zip(keys, key))
        base = _baseline_row(g, baseline, what)["mean_ms"]
        g = g.copy()
        g["speedup"] = [speedup(base, v) for v in g["mean_ms"]]
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def speed_frame(ev: pd.DataFrame, bench: pd.DataFrame, baseline: str = "e6d6") -> pd.DataFrame:
    """Long frame: every benchmark result with its speedup and its variant's R-2 / R-L impact."""
    sp = _with_speedups(bench, baseline, ["device", "mode", "size", "dataset", "batch_size"])
    evi = ev.set_index(["size", "dataset", "variant"])
    r2, r2_impact, rl = [], [], []
    for size, dataset, variant in sp[["size", "dataset", "variant"]].itertuples(index=False):
        if (size, dataset, variant) not in evi.index:
            raise ValueError(f"no eval for size {size}, dataset {dataset}, variant {variant} "
                             f"(needed for the impact column of its benchmark)")
        if (size, dataset, baseline) not in evi.index:
            raise ValueError(f"missing baseline: no {baseline} eval for size {size}, "
                             f"dataset {dataset}")
        row, base = evi.loc[(size, dataset, variant)], evi.loc[(size, dataset, baseline)]
        r2.append(row["rouge2"])
        rl.append(row["rougeL"])
        r2_impact.append(impact(row["rouge2"], base["rouge2"]))
    sp["R-2"], sp["impact (%)"], sp["R-L"] = r2, r2_impact, rl
    return sp


def speed_tables(sp: pd.DataFrame) -> dict[tuple[str, str, str, str], pd.DataFrame]:
    """Tables 8-10 / 25-33: per device, mode, size, dataset; per batch size ms, std, speedup."""
    out = {}
    for (device, mode, size, dataset), g in sp.groupby(["device", "mode", "size", "dataset"],
                                                       sort=True):
        first = _order(g.drop_duplicates("variant"))
        table = first[["variant", "lenc", "ldec", "R-2", "impact (%)"]].reset_index(drop=True)
        for bs in sorted(g["batch_size"].unique()):
            at = g[g["batch_size"] == bs].set_index("variant")
            table[f"BS{bs} ms"] = table["variant"].map(at["mean_ms"])
            table[f"BS{bs} std"] = table["variant"].map(at["std_ms"])
            table[f"BS{bs} speedup"] = table["variant"].map(at["speedup"])
            if mode != "fixed":  # in fixed mode every row decoded exactly --new-tokens
                table[f"BS{bs} new tokens"] = table["variant"].map(at["new_tokens_mean"])
        out[(device, mode, size, dataset)] = table
    return out


def summary_tables(sp: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Tables 8-9 layout: per device and mode, R-2 impact and speedup at the smallest batch
    size (1 in the paper), one column pair per size/dataset; NASH rows also show R-L (the
    metric of the NASH paper's Table 1)."""
    out = {}
    for (device, mode), g in sp.groupby(["device", "mode"], sort=True):
        table = pd.DataFrame({"variant": sort_variants(g["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        pairs = g[["size", "dataset"]].drop_duplicates()
        for size, dataset in sorted(pairs.itertuples(index=False),
                                    key=lambda p: (size_key(p[0]), p[1])):
            sd = g[(g["size"] == size) & (g["dataset"] == dataset)]
            bs = int(sd["batch_size"].min())
            at = sd[sd["batch_size"] == bs].set_index("variant")
            table[f"{size}/{dataset} impact (%)"] = table["variant"].map(at["impact (%)"])
            table[f"{size}/{dataset} R-L"] = table["variant"].map(at["R-L"])
            table[f"{size}/{dataset} speedup BS{bs}"] = table["variant"].map(at["speedup"])
        out[(device, mode)] = table
    return out


def arch_frame(arch: pd.DataFrame, baseline: str = "e6d6") -> pd.DataFrame:
    return _with_speedups(arch, baseline, ["device", "mode", "size", "batch_size"])


def arch_tables(sp: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Architecture-only: per device and mode, params, ms and speedup per size x batch size."""
    out = {}
    for (device, mode), g in sp.groupby(["device", "mode"], sort=True):
        table = pd.DataFrame({"variant": sort_variants(g["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        for size in sort_sizes(g["size"]):
            gs = g[g["size"] == size]
            params = gs.drop_duplicates("variant").set_index("variant")["params"]
            table[f"{size} params"] = table["variant"].map(params).astype("Int64")
            for bs in sorted(gs["batch_size"].unique()):
                at = gs[gs["batch_size"] == bs].set_index("variant")
                table[f"{size} BS{bs} ms"] = table["variant"].map(at["mean_ms"])
                table[f"{size} BS{bs} speedup"] = table["variant"].map(at["speedup"])
        out[(device, mode)] = table
    return out
