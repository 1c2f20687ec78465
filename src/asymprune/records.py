"""Typed records: the schema of every sidecar the report reads (pure Python, no torch).

One class per sidecar kind, built by its writer and parsed back by the report, each fact under
one name end to end:

  ModelRecord   how a model came to be (budget after the teacher, the NASH stage's facts):
                ``asymprune.model_record``, written by the stage that saved the model folder
  NashFacts     what the NASH stage reached; a ModelRecord carries it as ``nash``
                (``asymprune.model_record``)
  EvalRecord    an evaluation: metrics, their intervals, engine, the model's record
  BenchCell     one cell of a benchmark: a variant's raw timed runs under one protocol x mode x
                engine x batch size and their statistics. No verdict: whether a cell was
                disturbed is the report's judgement (docs/benchmark.md)
  BenchRecord   one benchmark sidecar: a variant's labels, model facts and cells

``from_dict(where, d)`` checks every field (``asymprune.record_checks``): a wrong or missing
one is a ValueError naming ``where`` (the file) and the key. Writers serialise with
``to_dict()`` (tuples as lists).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from asymprune import record_checks as C
from asymprune.model_record import ModelRecord

# Eval JSON "metrics" keys every evaluation has (the report's tables show all of them)
METRIC_NAMES = ("rouge1", "rouge2", "rougeLsum", "rougeL", "gen_len")


@dataclass(frozen=True)
class EvalRecord:
    """What the evaluate stage measured (its JSON's top level; the labels size, dataset and
    variant are its ``--tag``s, read with :func:`labels`)."""

    engine: str                                   # eager | compiled | ct2-<compute type>
    metrics: dict[str, float]                     # METRIC_NAMES at least
    metrics_ci95: dict[str, Any]                  # metric -> [low, high] (null: one document)
    identical_share: float | None                 # with --reference-predictions: share equal
    record: ModelRecord

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "metrics_ci95": C.json_shape(self.metrics_ci95),
                "engine": self.engine, "identical_share": self.identical_share,
                "record": self.record.to_dict()}

    @property
    def rouge2_ci95(self) -> tuple[float, float] | None:
        ci = self.metrics_ci95.get("rouge2")
        return None if ci is None else (ci[0], ci[1])

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "EvalRecord":
        d = C.mapping(where, d)
        metrics = C.field(where, d, "metrics", dict)
        for m in METRIC_NAMES:
            if m not in metrics:
                raise ValueError(f"{where}: metrics has no {m!r}")
            C.number(where, f"metrics.{m}", metrics[m])
        ci95 = d.get("metrics_ci95") or {}
        if not isinstance(ci95, dict):
            raise ValueError(f"{where}: metrics_ci95 must be an object, got {ci95!r}")
        ci = ci95.get("rouge2")
        if ci is not None:
            if not isinstance(ci, list) or len(ci) != 2:
                raise ValueError(f"{where}: metrics_ci95.rouge2 must be [low, high], got {ci!r}")
            for i in (0, 1):
                C.number(where, f"metrics_ci95.rouge2[{i}]", ci[i])
        share = d.get("identical_share")
        return cls(engine=C.name(where, "engine", d.get("engine")),
                   metrics={k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)},
                   metrics_ci95=ci95,
                   identical_share=(None if share is None
                                    else C.number(where, "identical_share", share)),
                   record=ModelRecord.from_dict(f"{where}: record", d.get("record")))


def labels(where: str, d: dict, keys: tuple[str, ...], hint: str) -> dict[str, str]:
    """The top-level labels ``keys`` of a sidecar (size, dataset, variant, device_label), each a
    name fit for a file name."""
    out = {}
    for key in keys:
        value = d.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: missing top-level {key!r} ({hint})")
        out[key] = C.name(where, key, value)
    return out


@dataclass(frozen=True)
class BenchCell:
    """A variant's timed runs in one benchmark cell and their statistics (docs/benchmark.md).

    ``spread`` = (max - min) / median of the runs' time per decoding step (``runs_ms`` /
    ``runs_steps``: natural mode stops each document after its own length, which is not
    noise); ``foreign_load`` = other processes' share of the job's CPUs during the timed runs
    (null where /proc is missing or the window too short to tell). The report judges both.
    """

    protocol: str                 # paper | nash
    mode: str                     # fixed | natural
    engine: str
    inputs: str                   # real | repeated | random
    batch_size: int
    num_beams: int
    source_tokens_mean: float     # mean source length fed (attention mask ones per row)
    mean_ms: float
    std_ms: float                 # sample std (n - 1)
    median_ms: float
    min_ms: float
    max_ms: float
    runs_ms: tuple[float, ...]
    runs_steps: tuple[int, ...]   # decoding steps each run paid for (its longest row)
    ms_per_step_median: float
    spread: float
    foreign_load: float | None
    load_avg_1m_before: float
    new_tokens_mean: float        # per row, EOS included
    new_tokens_max: int
    peak_memory_mb: float | None  # the most one timed run added on top of what was resident
    peak_memory_of: str | None    # cuda_allocated | rss; null where unknown

    def to_dict(self) -> dict[str, Any]:
        return C.json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "BenchCell":
        d = C.mapping(where, d)
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise ValueError(f"{where} has no {missing[0]!r} (a benchmark JSON of an older "
                             f"format? rerun the benchmark)")
        runs = C.field(where, d, "runs_ms", list)
        steps = C.field(where, d, "runs_steps", list)
        memory_of = d["peak_memory_of"]
        if memory_of is not None and not isinstance(memory_of, str):
            raise ValueError(f"{where}.peak_memory_of must be a string or null")
        return cls(
            **{k: C.name(where, k, d[k]) for k in ("protocol", "mode", "engine", "inputs")},
            batch_size=C.count(where, "batch_size", d["batch_size"]),
            num_beams=C.count(where, "num_beams", d["num_beams"]),
            **{k: C.number(where, k, d[k]) for k in (
                "source_tokens_mean", "mean_ms", "std_ms", "median_ms", "min_ms", "max_ms",
                "ms_per_step_median", "spread", "load_avg_1m_before", "new_tokens_mean")},
            runs_ms=tuple(C.number(where, f"runs_ms[{i}]", t) for i, t in enumerate(runs)),
            runs_steps=tuple(C.count(where, f"runs_steps[{i}]", n) for i, n in enumerate(steps)),
            foreign_load=C.optional_number(where, "foreign_load", d["foreign_load"]),
            new_tokens_max=C.count(where, "new_tokens_max", d["new_tokens_max"]),
            peak_memory_mb=C.optional_number(where, "peak_memory_mb", d["peak_memory_mb"]),
            peak_memory_of=memory_of)


@dataclass(frozen=True)
class BenchRecord:
    """One benchmark sidecar: a variant timed interleaved with ``timed_with``, its cells."""

    size: str
    dataset: str | None            # None: architecture-only (random weights, no data)
    variant: str
    timed_with: tuple[str, ...]    # every variant of the job, in its first round's order
    device_label: str              # names paths and tables: cpu, cuda, a10, ...
    device_name: str               # e.g. NVIDIA A10, or the CPU model
    model_source: str              # model (a trained folder) | arch (random weights)
    inputs: str
    source_tokens: int
    dtype: str
    torch_threads: int
    load_avg_1m_end: float
    params: int                    # without lm_head
    ct2_export: dict | None        # what the CTranslate2 export padded (NASH encoders)
    encoder_layers: int
    decoder_layers: int
    results: tuple[BenchCell, ...]

    def to_dict(self) -> dict[str, Any]:
        return C.json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any, *, with_dataset: bool = True) -> "BenchRecord":
        d = C.mapping(where, d)
        hint = "the workflow passes --size/--dataset/--variant/--device-label to the benchmark"
        keys = ("device_label", "size", "dataset", "variant") if with_dataset else (
            "device_label", "size", "variant")
        lab = labels(where, d, keys, hint)
        results = d.get("results")
        if not isinstance(results, list) or not results:
            raise ValueError(f"{where}: no 'results' list")
        for key in ("timed_with", "device_name", "model_source", "source_tokens", "dtype",
                    "torch_threads", "load_avg_1m_end", "params", "encoder_layers",
                    "decoder_layers"):
            if key not in d:
                raise ValueError(f"{where} has no {key!r} (a benchmark JSON of an older "
                                 f"format? rerun the benchmark)")
        return cls(
            size=lab["size"], dataset=lab.get("dataset"), variant=lab["variant"],
            timed_with=tuple(C.field(where, d, "timed_with", list)),
            device_label=lab["device_label"],
            device_name=C.field(where, d, "device_name", str),
            model_source=C.field(where, d, "model_source", str),
            inputs=C.name(where, "inputs", d.get("inputs")),
            source_tokens=C.count(where, "source_tokens", d["source_tokens"]),
            dtype=C.field(where, d, "dtype", str),
            torch_threads=C.count(where, "torch_threads", d["torch_threads"]),
            load_avg_1m_end=C.number(where, "load_avg_1m_end", d["load_avg_1m_end"]),
            params=C.integer(where, d, "params"),
            ct2_export=d.get("ct2_export"),
            encoder_layers=C.integer(where, d, "encoder_layers"),
            decoder_layers=C.integer(where, d, "decoder_layers"),
            results=tuple(BenchCell.from_dict(f"{where}: results[{i}]", r)
                          for i, r in enumerate(results)))
