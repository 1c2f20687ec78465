"""Sidecars -> typed records (``asymprune.records``) -> pandas frames, one row per evaluation
or benchmark cell. A malformed sidecar is a ValueError naming its file and key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from asymprune import records
from asymprune.model_record import ModelRecord
from asymprune.provenance import read_json
from asymprune.report.order import sixths, variant_group, variant_key

# Eval JSON "metrics" key -> column label of the paper's tables, in the paper's column order.
METRICS: dict[str, str] = {"rouge1": "R-1", "rouge2": "R-2", "rougeLsum": "RSL",
                           "rougeL": "R-L", "gen_len": "GenL"}
assert set(METRICS) == set(records.METRIC_NAMES)
# Labels of a benchmark cell (each also a part of file names) and its numbers; with the batch
# size and the labels of its JSON they identify it.
CELL_LABELS = ("protocol", "mode", "engine", "inputs")
CELL_NUMBERS = ("mean_ms", "std_ms", "median_ms", "min_ms", "max_ms", "spread", "foreign_load",
                "new_tokens_mean", "peak_memory_mb")

Record = tuple[str, dict[str, Any]]  # (file it came from, parsed JSON)
EVAL_HINT = "the workflow passes --size/--dataset/--variant to the evaluate stage"


def load(files: list[Path]) -> list[Record]:
    return [(str(f), read_json(f)) for f in files]


def eval_frame(evals: list[Record]) -> pd.DataFrame:
    """One row per eval JSON: size, dataset, variant, group, lenc, ldec and the five metrics."""
    rows, seen = [], {}
    for path, obj in evals:
        key = tuple(records.labels(path, obj, ("size", "dataset", "variant"), EVAL_HINT).values())
        variant_key(key[2])
        if key in seen:
            raise ValueError(f"two eval files for size/dataset/variant {'/'.join(key)}: "
                             f"{seen[key]} and {path}")
        seen[key] = path
        rec = records.EvalRecord.from_dict(path, obj)
        row = dict(zip(("size", "dataset", "variant"), key), file=path, engine=rec.engine)
        row.update({m: rec.metrics[m] for m in METRICS})
        # the bootstrap interval of the mean R-2 (null for a single document: NaN, blank)
        ci = rec.rouge2_ci95
        row["rouge2_lo"], row["rouge2_hi"] = (math.nan, math.nan) if ci is None else ci
        rows.append(row)
    return finish(pd.DataFrame(rows, columns=["size", "dataset", "variant", "file", "engine",
                                              *METRICS, "rouge2_lo", "rouge2_hi"]))


def engine_eval_frame(evals: list[Record]) -> pd.DataFrame:
    """One row per evaluation by a further engine (evaluate.engines): size, dataset, variant,
    engine, the five metrics and ``identical_share`` (share of documents whose prediction
    equals the main evaluation's)."""
    rows, seen = [], {}
    for path, obj in evals:
        key = tuple(records.labels(path, obj, ("size", "dataset", "variant"), EVAL_HINT).values())
        rec = records.EvalRecord.from_dict(path, obj)
        if (*key, rec.engine) in seen:
            raise ValueError(f"two {rec.engine} eval files for {'/'.join(key)}: "
                             f"{seen[(*key, rec.engine)]} and {path}")
        seen[(*key, rec.engine)] = path
        if rec.identical_share is None:
            raise ValueError(f"{path}: no identical_share (evaluate --reference-predictions)")
        rows.append({**dict(zip(("size", "dataset", "variant"), key)), "engine": rec.engine,
                     "file": path, **{m: rec.metrics[m] for m in METRICS},
                     "identical_share": rec.identical_share})
    return finish(pd.DataFrame(rows, columns=["size", "dataset", "variant", "engine", "file",
                                              *METRICS, "identical_share"]))


def model_record(path: str, obj: dict) -> ModelRecord:
    """How the model of an eval JSON came to be (its ``record``)."""
    return ModelRecord.from_dict(f"{path}: record", obj.get("record"))


def bench_frame(benches: list[Record], *, with_dataset: bool = True) -> pd.DataFrame:
    """One row per benchmark cell: labels, layer counts, params and latency statistics. No
    verdict: ``tables.judge`` adds whether a cell was disturbed."""
    rows, seen = [], {}
    for path, obj in benches:
        rec = records.BenchRecord.from_dict(path, obj, with_dataset=with_dataset)
        variant_key(rec.variant)
        labels = {"device": rec.device_label, "size": rec.size,
                  **({"dataset": rec.dataset} if with_dataset else {}), "variant": rec.variant}
        for cell in rec.results:
            key = (*labels.values(), *(getattr(cell, k) for k in (*CELL_LABELS, "batch_size")))
            if key in seen:
                raise ValueError(f"two benchmark cells for {key}: {seen[key]} and {path}")
            seen[key] = path
            rows.append({**labels, **{k: getattr(cell, k) for k in CELL_LABELS},
                         "batch_size": cell.batch_size, "num_beams": cell.num_beams,
                         "file": path, "encoder_layers": rec.encoder_layers,
                         "decoder_layers": rec.decoder_layers, "params": rec.params,
                         # null where it could not be measured (no /proc, or timed runs too
                         # short to tell 10 % of load from tick rounding): NaN, blank
                         **{k: math.nan if getattr(cell, k) is None else getattr(cell, k)
                            for k in CELL_NUMBERS}})
    frame = pd.DataFrame(rows)
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
    return finish(frame)


def finish(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = frame.copy()
    frame["group"] = [variant_group(v) for v in frame["variant"]]
    frame["lenc"] = [sixths(v)[0] for v in frame["variant"]]
    frame["ldec"] = [sixths(v)[1] for v in frame["variant"]]
    frame["lenc"] = frame["lenc"].astype("Int64")
    frame["ldec"] = frame["ldec"].astype("Int64")
    return frame
