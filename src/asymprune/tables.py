"""Table math of the report: sidecar records -> pandas frames. No plotting, no file writing.

Definitions (as in Campos & Zhai):
  retention R  = 100 * R-2(variant) / R-2(baseline)                  (Tables 5-7)
  impact       = 100 * (metric(variant) / metric(baseline) - 1)      (Tables 8-10, 16-24)
  speedup      = median latency(baseline) / median latency(variant)   (same device, protocol,
                                                                     mode, engine, batch size)
e.g. R-2 28.90 vs 29.03: R = 99.55 %, impact = -0.45 %; 524 ms vs 293 ms: speedup 1.79.
The paper divides means; we divide medians (see _with_speedups). A benchmark cell the benchmark
flagged as disturbed is marked wherever it is shown, and so is every speedup divided by it.

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

from asymprune import flan_t5, records, variants

# Eval JSON "metrics" key -> column label of the paper's tables, in the paper's column order.
METRICS: dict[str, str] = {"rouge1": "R-1", "rouge2": "R-2", "rougeLsum": "RSL",
                           "rougeL": "R-L", "gen_len": "GenL"}
SIZE_ORDER = flan_t5.SIZES   # small, base, large
GROUPS = variants.GROUPS
NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")  # labels end up in file names
# Labels of a benchmark cell (each also a part of file names) and its numbers; with the batch
# size and the labels of its JSON they identify it.
CELL_LABELS = ("protocol", "mode", "engine", "inputs")
CELL_NUMBERS = ("mean_ms", "std_ms", "median_ms", "min_ms", "max_ms", "spread", "foreign_load",
                "new_tokens_mean", "peak_memory_mb")
# null in a cell where it could not be measured (no /proc, or timed runs too short to tell
# 10 % of load from tick rounding): NaN in the frame, blank in the tables
NULLABLE_NUMBERS = frozenset({"foreign_load", "peak_memory_mb"})
BENCH_CELL_KEYS = (*CELL_LABELS, "batch_size", "num_beams", *CELL_NUMBERS, "disturbed",
                   "disturbed_why")
# A speedup divides two cells of the same key (one inputs kind per protocol, see bench_frame).
SPEED_KEY = ["device", "protocol", "mode", "engine", "size", "dataset", "batch_size"]
PAPER_PROTOCOL = "paper"  # Campos & Zhai's protocol; "nash" is NASH's (beam 4, batch 32)
ENGINE_ORDER = ("eager", "compiled", *(f"ct2-{t}" for t in ("float32", "int8_float32", "int8",
                                                             "float16", "bfloat16",
                                                             "int8_float16", "int8_bfloat16")))
# Engines that give the eager engine's tokens by construction (asymprune.engine's compiled
# step; tests/test_engine*.py check it): a main evaluation with one of them scores both.
TOKEN_IDENTICAL = ("eager", "compiled")
DAGGER = "†"  # the mark of a disturbed cell in Markdown / HTML tables

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
        row = dict(zip(("size", "dataset", "variant"), key), file=path,
                   engine=_label(path, obj, "engine", "the evaluate stage records its engine"))
        for m in METRICS:
            if m not in metrics:
                raise ValueError(f"{path}: metrics has no {m!r}")
            row[m] = _number(path, f"metrics.{m}", metrics[m])
        # the bootstrap interval of the mean R-2 (null for a single document: NaN, blank)
        ci = (obj.get("metrics_ci95") or {}).get("rouge2")
        if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
            raise ValueError(f"{path}: metrics_ci95.rouge2 must be [low, high], got {ci!r}")
        row["rouge2_lo"], row["rouge2_hi"] = (
            (math.nan, math.nan) if ci is None else
            (_number(path, "metrics_ci95.rouge2[0]", ci[0]),
             _number(path, "metrics_ci95.rouge2[1]", ci[1])))
        rows.append(row)
    return _finish(pd.DataFrame(rows, columns=["size", "dataset", "variant", "file", "engine",
                                               *METRICS, "rouge2_lo", "rouge2_hi"]))


def engine_eval_frame(records: list[Record]) -> pd.DataFrame:
    """One row per evaluation by a further engine (evaluate.engines): size, dataset, variant,
    engine, the five metrics and ``identical_share`` (share of documents whose prediction
    equals the main evaluation's)."""
    rows, seen = [], {}
    for path, obj in records:
        hint = "the workflow passes --size/--dataset/--variant to the evaluate stage"
        key = tuple(_label(path, obj, k, hint) for k in ("size", "dataset", "variant"))
        engine = _label(path, obj, "engine", "the evaluate stage records its engine")
        if (*key, engine) in seen:
            raise ValueError(f"two {engine} eval files for {'/'.join(key)}: "
                             f"{seen[(*key, engine)]} and {path}")
        seen[(*key, engine)] = path
        metrics = obj.get("metrics")
        if not isinstance(metrics, dict) or any(m not in metrics for m in METRICS):
            raise ValueError(f"{path}: metrics needs {list(METRICS)}")
        share = obj.get("identical_share")
        if share is None:
            raise ValueError(f"{path}: no identical_share (evaluate --reference-predictions)")
        rows.append({**dict(zip(("size", "dataset", "variant"), key)), "engine": engine,
                     "file": path, **{m: _number(path, f"metrics.{m}", metrics[m])
                                      for m in METRICS},
                     "identical_share": _number(path, "identical_share", share)})
    return _finish(pd.DataFrame(rows, columns=["size", "dataset", "variant", "engine", "file",
                                               *METRICS, "identical_share"]))


def quality_frame(ev: pd.DataFrame, eng: pd.DataFrame | None) -> pd.DataFrame:
    """R-2 of every (size, dataset, variant, engine) that was scored, and where it comes from:
    the engine's own evaluation, or the main evaluation for the engines that give its tokens
    (``TOKEN_IDENTICAL``, when the main evaluation used one of them)."""
    rows = []
    for r in ev.to_dict("records"):
        same = TOKEN_IDENTICAL if r["engine"] in TOKEN_IDENTICAL else (r["engine"],)
        rows += [{"size": r["size"], "dataset": r["dataset"], "variant": r["variant"],
                  "engine": e, "R-2": r["rouge2"],
                  "quality from": f"{r['engine']} evaluation"} for e in same]
    if eng is not None:
        rows += [{"size": r["size"], "dataset": r["dataset"], "variant": r["variant"],
                  "engine": r["engine"], "R-2": r["rouge2"],
                  "quality from": f"{r['engine']} evaluation"} for r in eng.to_dict("records")]
    q = pd.DataFrame(rows, columns=["size", "dataset", "variant", "engine", "R-2",
                                    "quality from"])
    dup = q.duplicated(["size", "dataset", "variant", "engine"])
    if dup.any():
        r = q[dup].iloc[0]
        raise ValueError(f"{r['engine']} of {r['size']}/{r['dataset']}/{r['variant']} is scored "
                         f"twice (the main evaluation's engine is also in evaluate.engines)")
    return q


def precision_tables(ev: pd.DataFrame, eng: pd.DataFrame,
                     baseline: str = "e6d6") -> dict[tuple[str, str], pd.DataFrame]:
    """Per size x dataset: each variant's R-2 and retention with the main evaluation (float32
    or the configured dtype) next to each further engine's (e.g. ct2-int8), the generation
    length, and the share of documents each engine predicts exactly as the main one."""
    out = {}
    for (size, dataset), d in ev.groupby(["size", "dataset"], sort=True):
        base_r2 = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")["rouge2"]
        d = _order(d)
        main = d["engine"].iloc[0]
        table = pd.DataFrame({"variant": d["variant"].to_numpy(),
                              f"R-2 {main}": d["rouge2"].to_numpy(),
                              f"retention {main} (%)": [retention(v, base_r2)
                                                        for v in d["rouge2"]],
                              f"GenL {main}": d["gen_len"].to_numpy()})
        e = eng[(eng["size"] == size) & (eng["dataset"] == dataset)]
        if e.empty:
            continue
        for engine in sort_engines(e["engine"]):
            at = e[e["engine"] == engine].set_index("variant")
            table[f"R-2 {engine}"] = table["variant"].map(at["rouge2"])
            # retention against the baseline's main evaluation: what the deployed engine keeps
            # of the unpruned model as evaluated (e.g. e6d6 on int8 may itself lose some)
            table[f"retention {engine} (%)"] = [retention(v, base_r2)
                                                for v in table[f"R-2 {engine}"]]
            table[f"GenL {engine}"] = table["variant"].map(at["gen_len"])
            table[f"same as {main} (%)"
                  if len(set(e["engine"])) == 1 else
                  f"{engine} same as {main} (%)"] = 100 * table["variant"].map(
                at["identical_share"])
        table.attrs.update(
            title=f"Quality per engine and precision, {size}/{dataset} (retention = R-2 in % "
                  f"of {baseline}'s R-2 under {main})", marks={},
            notes=[f"same as {main}: share of documents whose summary is character for "
                   f"character the {main} evaluation's."])
        out[(size, dataset)] = table
    return out


KIND_LABELS = {"nash": "NASH", "kd": "equal budget, distilled (kd)",
               "ce": "equal budget, cross-entropy (ce)", "depth": "re-fine-tuned"}


def _record(path: str, obj: dict) -> records.ModelRecord:
    return records.ModelRecord.from_dict(f"{path}: record", obj.get("record"))


def _pct(x: float | None) -> float:
    return math.nan if x is None else 100 * x


def nash_tables(eval_records: list[Record], ev: pd.DataFrame,
                baseline: str = "e6d6") -> dict[tuple[str, str], pd.DataFrame]:
    """NASH per size x dataset, compared at equal budget, from the evaluate stage's typed
    records (``asymprune.records``).

    For each decoder depth (in blocks) that a NASH variant has: the NASH variants, then the
    equal-budget baselines of that decoder depth (e{E}d{D}-kd / -ce: the NASH stage's steps
    without gates, then the same final fine-tune), then the re-fine-tuned depth variants of
    that depth (their own, smaller budget). Columns: the NASH stage's sparsities (the gates'
    own expected sparsity, the rounded per-layer masks before the global adjustment, how many
    units the adjustment moved, the reached sparsity of the pruned encoder), the budget after
    the teacher (optimizer steps and examples) and R-2. A NASH run whose gates ended further
    from the target than its tolerance is marked †.
    """
    rows, teacher_encoder = [], {}
    for path, obj in eval_records:
        variant = obj.get("variant", "")
        group = variants.group(variant, baseline)
        rec = _record(path, obj)
        if group == "baseline":
            teacher_encoder[obj["size"], obj["dataset"]] = rec.encoder_layers
            continue
        if group == "nash" and (rec.nash is None or rec.nash.variant != variant):
            raise ValueError(f"{path}: NASH variant {variant} without the NASH stage's facts "
                             f"for it in its record (record.nash)")
        kind = ("nash" if group == "nash" else variants.parse(variant).objective
                if group == "budget" else "depth")
        facts = rec.nash if kind == "nash" else None
        rows.append({
            "size": obj["size"], "dataset": obj["dataset"], "variant": variant,
            "kind": KIND_LABELS[kind],
            # NASH's paper protocol or its released code's (-rel ids, docs/nash.md); the
            # baselines train as the paper protocol's NASH rows
            "protocol": facts.protocol if facts else ("paper" if kind in ("kd", "ce") else ""),
            "decoder blocks": rec.decoder_layers,
            "encoder blocks": rec.encoder_layers,
            "target (%)": _pct(facts.target_sparsity) if facts else math.nan,
            "gates' expected (%)": _pct(facts.gates_expected_sparsity) if facts else math.nan,
            "gates missed target": bool(facts and facts.gates_missed_target),
            "masks before adjustment (%)": (_pct(facts.mask_sparsity_before_adjustment)
                                            if facts else math.nan),
            "units moved": (facts.units_removed + facts.units_restored
                            if facts and facts.units_removed is not None else pd.NA),
            "reached (%)": _pct(facts.reached_sparsity) if facts else math.nan,
            "steps": rec.steps, "examples": rec.examples,
        })
    out = {}
    frame = pd.DataFrame(rows)
    for (size, dataset), g in frame.groupby(["size", "dataset"], sort=True) if rows else []:
        depths = sorted(set(g.loc[g["kind"] == KIND_LABELS["nash"], "decoder blocks"]))
        if not depths:
            continue
        # re-fine-tuned depth variants: those with the teacher's whole encoder (NASH keeps
        # every encoder block) and those that have an equal-budget twin here
        twins = {v.rsplit("-", 1)[0] for v in g.loc[g["kind"].isin(
            [KIND_LABELS["kd"], KIND_LABELS["ce"]]), "variant"]}
        full = teacher_encoder.get((size, dataset))
        refined = g["kind"] == KIND_LABELS["depth"]
        g = g[~refined | g["variant"].isin(twins) | (g["encoder blocks"] == full)]
        d = ev[(ev["size"] == size) & (ev["dataset"] == dataset)]
        base = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")
        r2 = d.set_index("variant")["rouge2"]
        kinds = list(KIND_LABELS.values())
        parts = [_order(g[g["decoder blocks"] == k]).sort_values(
                     "kind", key=lambda c: c.map(kinds.index), kind="stable") for k in depths]
        table = pd.concat(parts).drop(columns=["size", "dataset"]).reset_index(drop=True)
        table["units moved"] = table["units moved"].astype("Int64")
        table["R-2"] = table["variant"].map(r2).to_numpy()
        table["R-2 impact (%)"] = [impact(v, base["rouge2"]) for v in table["R-2"]]
        missed = table[table["gates missed target"]]
        notes = [f"Budget = training after the teacher {baseline}: optimizer steps and examples "
                 f"(steps x effective batch), summed over the NASH stage and the fine-tune "
                 f"after it (or the one re-fine-tune). Equal-budget baselines keep the depth "
                 f"variant's blocks and train exactly as the NASH rows of their decoder depth, "
                 f"without gates. Sparsities are of the teacher's encoder prunable parameters; "
                 f"masks before adjustment = each layer keeping its gates' expected number of "
                 f"units, before units are moved to bring the total within the tolerance."]
        if not missed.empty:
            notes.append(f"{DAGGER} the gates' own expected sparsity ended further from the "
                         f"target than nash.train.gate_miss_tolerance: "
                         f"{', '.join(missed['variant'])}; its reached sparsity is met by the "
                         f"adjustment, not by training (train longer or raise the multipliers' "
                         f"learning rate)")
        table.attrs.update(
            title=f"NASH at equal budget, {size}/{dataset}: sparsities, budget, R-2",
            marks={"gates' expected (%)": "gates missed target"}, notes=notes)
        out[(size, dataset)] = table
    return out


def _name(path: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"{path}: {where} must be a name fit for a file name, got {value!r}")
    return value


def _count(path: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: {where} must be a positive integer, got {value!r}")
    return value


def bench_frame(records: list[Record], *, with_dataset: bool = True) -> pd.DataFrame:
    """One row per benchmark cell: labels, layer counts, params, latency statistics, and whether
    the benchmark flagged the cell as disturbed (``disturbed``; its reasons, joined, in ``why``).
    """
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
            where = f"results[{i}]"
            for k in BENCH_CELL_KEYS:
                if k not in r:
                    raise ValueError(f"{path}: {where} has no {k!r} (a benchmark JSON of an "
                                     f"older format? rerun the benchmark)")
            cell = {k: _name(path, f"{where}.{k}", r[k]) for k in CELL_LABELS}
            cell["batch_size"] = _count(path, f"{where}.batch_size", r["batch_size"])
            cell["num_beams"] = _count(path, f"{where}.num_beams", r["num_beams"])
            key = (*labels.values(), *(cell[k] for k in (*CELL_LABELS, "batch_size")))
            if key in seen:
                raise ValueError(f"two benchmark cells for {key}: {seen[key]} and {path}")
            seen[key] = path
            why = r["disturbed_why"]
            if not isinstance(r["disturbed"], bool) or not isinstance(why, list) \
                    or not all(isinstance(w, str) for w in why):
                raise ValueError(f"{path}: {where}.disturbed must be true/false and "
                                 f"disturbed_why a list of strings")
            if r["disturbed"] and not why:
                raise ValueError(f"{path}: {where} is disturbed but disturbed_why is empty")
            row = {**labels, **cell, "file": path, "encoder_layers": obj.get("encoder_layers"),
                   "decoder_layers": obj.get("decoder_layers"), "params": obj.get("params"),
                   "disturbed": r["disturbed"], "why": "; ".join(why)}
            for k in CELL_NUMBERS:
                row[k] = (math.nan if r[k] is None and k in NULLABLE_NUMBERS
                          else _number(path, f"{where}.{k}", r[k]))
            rows.append(row)
    frame = pd.DataFrame(rows).rename(columns={"device_label": "device"})
    if not with_dataset:
        frame["dataset"] = None
    # The wide tables do not split by inputs (real / repeated / random documents): one protocol
    # of one size and data set must have been timed on one kind of inputs, else a table would
    # put two different measurements in one cell.
    for key, g in frame.groupby(["device", "size", "dataset", "protocol"], dropna=False):
        if g["inputs"].nunique() > 1:
            raise ValueError(f"benchmark cells of device/size/dataset/protocol {key} mix inputs "
                             f"{sorted(g['inputs'].unique())}: rerun them with one "
                             f"benchmark.inputs (files: {sorted(g['file'].unique())})")
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
            if m == "rouge2":
                table["R-2 95% CI low"] = d["rouge2_lo"].to_numpy()
                table["R-2 95% CI high"] = d["rouge2_hi"].to_numpy()
        table.attrs.update(title=f"Quality of every variant, {size}/{dataset}", marks={},
                           notes=["R-2 95% CI: percentile bootstrap of the mean over the test "
                                  "documents (1,000 seeded resamples): two variants whose "
                                  "intervals overlap widely may differ by the sample alone."])
        out[(size, dataset)] = table
    return out


def _with_speedups(bench: pd.DataFrame, baseline: str, keys: list[str]) -> pd.DataFrame:
    """Adds ``speedup`` = baseline median / variant median within the same ``keys``, and
    ``speedup disturbed``: the cell or the baseline cell it divides by is disturbed.

    Medians, not means: one timed run slowed by a background job moves the mean of 7 runs by
    1/7 of its excess but leaves the median where the other runs are.
    """
    parts = []
    for key, g in bench.groupby(keys, sort=False, dropna=False):
        what = "benchmark for " + ", ".join(f"{k} {v}" for k, v in zip(keys, key))
        base = _baseline_row(g, baseline, what)
        g = g.copy()
        g["speedup"] = [speedup(base["median_ms"], v) for v in g["median_ms"]]
        g["speedup disturbed"] = g["disturbed"] | bool(base["disturbed"])
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def speed_frame(ev: pd.DataFrame, bench: pd.DataFrame, baseline: str = "e6d6") -> pd.DataFrame:
    """Long frame: every benchmark cell with its speedup and its variant's R-2 / R-L impact."""
    sp = _with_speedups(bench, baseline, SPEED_KEY)
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


def arch_frame(arch: pd.DataFrame, baseline: str = "e6d6") -> pd.DataFrame:
    return _with_speedups(arch, baseline, [k for k in SPEED_KEY if k != "dataset"])


# ----------------------------------------------------------------------------- disturbed cells
#
# A table is a DataFrame plus three attrs the writer renders: "title" (a line above it),
# "marks" ({column: boolean column}; True puts a † after that row's number: CSV keeps the
# boolean column, Markdown and HTML show the † instead) and "notes" (lines below it).

def _annotate(table: pd.DataFrame, title: str, marks: dict[str, str], cells: pd.DataFrame,
              baseline: str, notes: Iterable[str] = ()) -> pd.DataFrame:
    table.attrs.update(title=title, marks=marks,
                       notes=[*notes, *disturbed_notes(cells, baseline)])
    return table


def disturbed_notes(cells: pd.DataFrame, baseline: str = "e6d6") -> list[str]:
    """Footnote lines for the disturbed cells among ``cells`` (those a table is made of): what
    the † means, then one line per disturbed cell with the benchmark's reasons."""
    bad = _order(cells[cells["disturbed"]].sort_values("batch_size", kind="stable"))
    if bad.empty:
        return []
    lines = [f"{DAGGER} disturbed: the benchmark flagged the cell (its timed runs spread too "
             f"wide, or other processes used the CPU meanwhile); its speedup is marked too, and "
             f"so is every speedup divided by a disturbed {baseline} cell. Figures leave these "
             f"cells out; disturbed_benchmarks.txt lists the files to rerun."]
    for r in bad.to_dict("records"):
        where = r["size"] if pd.isna(r["dataset"]) else f"{r['size']}/{r['dataset']}"
        lines.append(f"{DAGGER} {r['variant']} {where}, {r['protocol']} protocol, {r['mode']} "
                     f"length, {r['engine']}, BS{r['batch_size']}: {r['why']}")
    return lines


def protocol_label(protocol: str, cells: pd.DataFrame) -> str:
    """"NASH protocol: beam 4, batch 32" or "paper protocol: greedy, batch 1/8/16", read from
    the cells' own num_beams and batch sizes."""
    beams = sorted(int(b) for b in cells["num_beams"].unique())
    decoding = "greedy" if beams == [1] else "beam " + "/".join(map(str, beams))
    batches = "/".join(str(int(b)) for b in sorted(cells["batch_size"].unique()))
    name = "NASH protocol" if protocol == "nash" else f"{protocol} protocol"
    return f"{name}: {decoding}, batch {batches}"


def _title(what: str, cells: pd.DataFrame, protocol: str, mode: str, device: str,
           engine: str | None = None, where: str | None = None) -> str:
    parts = [protocol_label(protocol, cells), f"{mode} output length"]
    if engine is not None:
        parts.append(f"{engine} engine")
    parts.append(f"inputs {'/'.join(sorted(cells['inputs'].unique()))}")
    parts.append(device if where is None else f"{device}, {where}")
    return f"{what} ({'; '.join(parts)})"


def sort_engines(engines: Iterable[str]) -> list[str]:
    return sorted(set(engines), key=lambda e: (ENGINE_ORDER.index(e), "") if e in ENGINE_ORDER
                  else (len(ENGINE_ORDER), e))


def _put(table: pd.DataFrame, marks: dict[str, str], label: str, values: pd.Series,
         flags: pd.Series | None = None) -> None:
    """Column ``label`` = ``values`` (indexed by variant); with ``flags`` also the boolean
    column ``<label> disturbed`` that marks it (empty where the variant has no cell)."""
    table[label] = table["variant"].map(values)
    if flags is not None:
        table[f"{label} disturbed"] = table["variant"].map(flags).astype("boolean")
        marks[label] = f"{label} disturbed"


def _variant_rows(g: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return _order(g.drop_duplicates("variant"))[columns].reset_index(drop=True)


# ----------------------------------------------------------------------------- speed tables

def speed_tables(sp: pd.DataFrame, baseline: str = "e6d6") -> dict[tuple, pd.DataFrame]:
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


def summary_tables(sp: pd.DataFrame, baseline: str = "e6d6") -> dict[tuple, pd.DataFrame]:
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


def engine_tables(sp: pd.DataFrame, baseline: str = "e6d6") -> dict[tuple, pd.DataFrame]:
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


def engine_ratio_tables(sp: pd.DataFrame, baseline: str = "e6d6") -> dict[tuple, pd.DataFrame]:
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


def arch_tables(sp: pd.DataFrame, baseline: str = "e6d6") -> dict[tuple, pd.DataFrame]:
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


def cells_table(frames: list[pd.DataFrame], baseline: str = "e6d6") -> pd.DataFrame:
    """Every benchmark cell (trained and architecture-only) in one long table, with all its
    statistics, its speedup, both flags and the benchmark's reasons."""
    cells = pd.concat(frames, ignore_index=True)
    cells = _order(cells).sort_values(
        ["device", "size", "dataset", "protocol", "mode", "engine", "batch_size"], kind="stable")
    table = cells[list(CELL_COLUMNS)].rename(columns=CELL_COLUMNS).reset_index(drop=True)
    title = f"All benchmark cells (speedup = {baseline} median / variant median, same key)"
    return _annotate(table, title, {"median ms": "disturbed", "speedup": "speedup disturbed"},
                     cells, baseline)


# ----------------------------------------------------------------------------- decisions

def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """(latency, quality) pairs -> whether each is on the Pareto front: no other point is as
    fast or faster and as good or better, and strictly one of the two. Equal points are both
    on it."""
    return [not any(l2 <= lat and q2 >= q and (l2 < lat or q2 > q) for l2, q2 in points)
            for lat, q in points]


def pareto_tables(sp: pd.DataFrame, ev: pd.DataFrame, batch_size: int,
                  baseline: str = "e6d6", eng: pd.DataFrame | None = None
                  ) -> dict[tuple[str, str], pd.DataFrame]:
    """Per size x dataset: every (variant, engine) timed (paper protocol, fixed length,
    ``batch_size``) with its R-2 and median latency per device, and whether it is on the one
    front of that device over all variants, engines and precisions. A pair is on the front
    only when undisturbed and scored (``quality_frame``); the others are listed."""
    cells = sp[(sp["protocol"] == PAPER_PROTOCOL) & (sp["mode"] == "fixed")]
    at = cells[cells["batch_size"] == batch_size]
    if at.empty:
        timed = sorted(int(b) for b in cells["batch_size"].unique())
        raise ValueError(f"config key report.batch_size: no {PAPER_PROTOCOL}-protocol, "
                         f"fixed-length benchmark cell at batch size {batch_size} (timed: "
                         f"{timed or 'none; benchmark.modes needs fixed'})")
    quality = quality_frame(ev, eng).set_index(["size", "dataset", "variant", "engine"])
    out = {}
    for (size, dataset), g in at.groupby(["size", "dataset"], sort=True):
        d = ev[(ev["size"] == size) & (ev["dataset"] == dataset)]
        base_r2 = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")["rouge2"]
        parts = []
        for device, c in g.groupby("device", sort=True):
            keys = [(size, dataset, v, e) for v, e in zip(c["variant"], c["engine"])]
            r2 = [quality["R-2"].get(k, math.nan) for k in keys]
            eager_base = c[(c["variant"] == baseline) & (c["engine"] == "eager")]
            base_ms = eager_base["median_ms"].iloc[0] if len(eager_base) else math.nan
            t = pd.DataFrame({
                "device": device, "variant": c["variant"].to_numpy(),
                "engine": c["engine"].to_numpy(), "R-2": r2,
                "retention (%)": [retention(v, base_r2) for v in r2],
                "median ms": c["median_ms"].to_numpy(), "spread": c["spread"].to_numpy(),
                "speedup": c["speedup"].to_numpy(),
                f"speedup vs {baseline} eager": [base_ms / m for m in c["median_ms"]],
                "peak MiB": c["peak_memory_mb"].to_numpy(),
                "disturbed": c["disturbed"].to_numpy(),
                "speedup disturbed": c["speedup disturbed"].to_numpy(),
                "quality from": [quality["quality from"].get(k, "not evaluated")
                                 for k in keys]})
            ok = ~t["disturbed"] & t["R-2"].notna()
            t["on_front"] = False
            if ok.any():  # every pair disturbed or unscored: no front
                t.loc[ok, "on_front"] = pareto_front(list(zip(t.loc[ok, "median ms"],
                                                              t.loc[ok, "R-2"])))
            parts.append(t.sort_values(["median ms", "engine"], kind="stable"))
        table = pd.concat(parts, ignore_index=True)
        title = (f"Pareto front of R-2 vs median latency over variants and engines, "
                 f"{size}/{dataset} ({PAPER_PROTOCOL} protocol, fixed output length, "
                 f"batch {batch_size})")
        notes = [f"on_front: no undisturbed, scored (variant, engine) of the same device is "
                 f"both at least as fast and at least as good (R-2); retention = R-2 in % of "
                 f"{baseline}'s main evaluation; speedup = {baseline} on the same engine / "
                 f"this; speedup vs {baseline} eager = the latency a user gains over HF "
                 f"generate of the unpruned model; peak MiB = the most one timed run added to "
                 f"memory; quality from: eager and compiled give the same tokens and share the "
                 f"main evaluation, a ct2-* engine has its own (evaluate.engines) or none."]
        if any(v.startswith("nash-") for v in table["variant"]) and \
                any(e.startswith("ct2-") for e in table["engine"]):
            notes.append("ct2-* engines run NASH encoders padded back to full width with "
                         "zero weights (asymprune.ct2): same outputs, but padded heads and "
                         "FFN units keep their compute, so NASH's ct2 latency is an upper "
                         "bound of what a width-aware kernel would give.")
        out[(size, dataset)] = _annotate(
            table, title, {"median ms": "disturbed", "speedup": "speedup disturbed"}, g,
            baseline, notes)
    return out


def recommend(cells: pd.DataFrame, budget_ms: float | None, floor: float | None,
              baseline: str = "e6d6") -> tuple[str | None, str]:
    """The variant ``choose`` picks (None when none) and why."""
    row, reason = choose(cells, budget_ms, floor, baseline)
    return (None if row is None else row["variant"]), reason


def choose(cells: pd.DataFrame, budget_ms: float | None, floor: float | None,
           baseline: str = "e6d6") -> tuple[pd.Series | None, str]:
    """(row, reason) among the undisturbed, scored rows of one device of a Pareto table
    (every engine; with an ``engine`` column the variant is named "variant on engine").

    budget only: the best R-2 with median <= budget (the faster of equals); floor only: the
    fastest with retention >= floor (the better R-2 of equals); both: the fastest meeting both.
    Neither, or nothing meeting them: (None, why).
    """
    if budget_ms is None and floor is None:
        return None, ("no recommendation: neither report.latency_budget_ms nor "
                      "report.quality_floor is set")
    ok = cells[~cells["disturbed"] & cells["R-2"].notna()]
    rules, fits = [], ok
    if budget_ms is not None:
        rules.append(f"median <= {budget_ms:g} ms")
        fits = fits[fits["median ms"] <= budget_ms]
    if floor is not None:
        if ok["retention (%)"].isna().all():
            return None, (f"no recommendation: R-2 retention is undefined ({baseline}'s R-2 "
                          f"is 0), so report.quality_floor cannot be applied")
        rules.append(f"R-2 retention >= {floor:g} %")
        fits = fits[fits["retention (%)"] >= floor]
    rule = " and ".join(rules)
    what = "variant-engine pairs" if "engine" in cells else "variants"
    left_out = len(cells) - len(ok)
    among = f"{len(ok)} undisturbed {what}" + (f", {left_out} disturbed or not evaluated "
                                               f"left out" if left_out else "")
    if fits.empty:
        return None, f"no recommendation: none of {among} has {rule}"
    if floor is None:
        best = fits.sort_values(["R-2", "median ms"], ascending=[False, True]).iloc[0]
        why = f"best R-2 of the {len(fits)} with {rule} ({among})"
    else:
        best = fits.sort_values(["median ms", "R-2"], ascending=[True, False]).iloc[0]
        why = f"fastest of the {len(fits)} with {rule} ({among})"
    if "engine" in cells:
        why = (f"{best['variant']} on {best['engine']}: {best['median ms']:.0f} ms, R-2 "
               f"retention {best['retention (%)']:.0f} %; {why}")
    return best, why


def recommendation_table(paretos: dict[tuple[str, str], pd.DataFrame], budget_ms: float | None,
                         floor: float | None, batch_size: int,
                         baseline: str = "e6d6") -> pd.DataFrame:
    """One row per size, dataset and device: the recommended variant and engine over every
    variant x engine x precision timed (blank when none), its numbers and the reason."""
    rows = []
    for (size, dataset), table in paretos.items():
        for device, cells in table.groupby("device", sort=True):
            chosen, reason = choose(cells, budget_ms, floor, baseline)
            row = {"size": size, "dataset": dataset, "device": device, "variant": None,
                   "engine": None, "R-2": math.nan, "retention (%)": math.nan,
                   "median ms": math.nan, "speedup": math.nan}
            if chosen is not None:
                row.update({k: chosen[k] for k in ("variant", "engine", "R-2", "retention (%)",
                                                   "median ms", "speedup")})
            rows.append({**row, "reason": reason})
    table = pd.DataFrame(rows)
    settings_text = (f"report.latency_budget_ms = {budget_ms}, report.quality_floor = {floor}, "
                     f"report.batch_size = {batch_size}")
    table.attrs.update(title=f"Recommended variant and engine ({PAPER_PROTOCOL} protocol, "
                             f"fixed output length; {settings_text})", marks={}, notes=[])
    return table
