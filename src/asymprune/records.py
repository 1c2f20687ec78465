"""Typed records: the schema of every sidecar the report reads (pure Python, no torch).

One class per sidecar kind, built by its writer and parsed back by the report, each fact under
one name end to end:

  ModelRecord   how a model came to be (budget after the teacher, the NASH stage's facts);
                every stage that saves a model folder (finetune, prune_layers, the NASH stage)
                builds it from its parent model's record (:func:`derive`) and writes it as
                ``record`` in the folder's ``sidecar.json``; evaluate reads it back
  NashFacts     what the NASH stage reached; a ModelRecord carries it as ``nash``
  EvalRecord    an evaluation: metrics, their intervals, engine, the model's record
  BenchCell     one cell of a benchmark: a variant's raw timed runs under one protocol x mode x
                engine x batch size and their statistics. No verdict: whether a cell was
                disturbed is the report's judgement (docs/benchmark.md)
  BenchRecord   one benchmark sidecar: a variant's labels, model facts and cells

``from_dict(where, d)`` checks every field: a wrong or missing one is a ValueError naming
``where`` (the file) and the key. Writers serialise with ``to_dict()`` (tuples as lists).

Budget (ModelRecord): the optimizer steps and examples (steps x effective batch) each model
was trained for *after* the teacher, phase by phase. E.g. a NASH variant: NASH stage 320 steps
x 8 = 2,560 examples + final fine-tune 32 x 32 = 1,024, so 3,584 examples; the re-fine-tuned
e6d2: 1,024. Each stage appends its own phase to its parent's: the teacher's fine-tune
counts none, block removal trains nothing, a re-fine-tune or the NASH stage adds one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from asymprune.variants import PROTOCOLS

STAGES = ("finetune", "nash")


@dataclass(frozen=True)
class Phase:
    """One training run after the teacher."""

    stage: str             # finetune (re-fine-tune or NASH's final fine-tune) | nash
    variant: str | None    # the NASH stage's variant id (a NASH variant or e{E}d{D}-{kd|ce})
    steps: int             # optimizer steps
    effective_batch: int   # examples per optimizer step

    @property
    def examples(self) -> int:
        return self.steps * self.effective_batch


@dataclass(frozen=True)
class NashFacts:
    """What the NASH stage reached (sparsities are fractions of the teacher's encoder
    prunable parameters; None where a NASH run has no gates: encoder modes none / layers,
    equal-budget baselines)."""

    variant: str
    protocol: str                                 # paper | released (asymprune.variants)
    target_sparsity: float
    reached_sparsity: float                       # of the physically pruned encoder
    gates_expected_sparsity: float | None         # the gates' own, at the end of training
    mask_sparsity_before_adjustment: float | None  # per-layer rounded masks, before moving units
    units_removed: int | None                     # by the global adjustment to the target band
    units_restored: int | None
    gates_missed_target: bool | None              # |gates' expected - target| > tolerance
    encoder_blocks: tuple[int, ...]
    decoder_blocks: tuple[int, ...]
    parameters: int                               # of the pruned model, without lm_head

    def to_dict(self) -> dict[str, Any]:
        return _json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "NashFacts":
        return _nash(where, d)


@dataclass(frozen=True)
class ModelRecord:
    encoder_layers: int
    decoder_layers: int
    phases: tuple[Phase, ...]   # after the teacher, in training order; () for the teacher
    nash: NashFacts | None      # the NASH stage's facts, where it made the model

    @property
    def steps(self) -> int:
        return sum(p.steps for p in self.phases)

    @property
    def examples(self) -> int:
        return sum(p.examples for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape :meth:`from_dict` reads (tuples as lists)."""
        return _json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "ModelRecord":
        """Checked: a wrong or missing field is a ValueError naming ``where`` and the field."""
        d = _mapping(where, d)
        phases = _field(where, d, "phases", list)
        nash = d.get("nash")
        return cls(
            encoder_layers=_int(where, d, "encoder_layers"),
            decoder_layers=_int(where, d, "decoder_layers"),
            phases=tuple(_phase(f"{where}.phases[{i}]", p) for i, p in enumerate(phases)),
            nash=None if nash is None else _nash(f"{where}.nash", nash))


def derive(parent: ModelRecord | None, encoder_layers: int, decoder_layers: int,
           phase: Phase | None = None, nash: NashFacts | None = None) -> ModelRecord:
    """The record of a model a stage saved, ``encoder_layers`` x ``decoder_layers`` deep, from
    a model whose record is ``parent`` (None: a hub model or a folder without a sidecar, a
    teacher whose own training is not counted): the parent's phases, then the stage's own
    ``phase`` (None: it trains nothing, e.g. block removal). ``nash`` is the NASH stage's
    facts; other stages carry the parent's over, so a NASH model's final fine-tune keeps them."""
    phases = (() if parent is None else parent.phases) + (() if phase is None else (phase,))
    if nash is None and parent is not None:
        nash = parent.nash
    return ModelRecord(encoder_layers, decoder_layers, phases, nash)


def sidecar_record(where: str, sidecar: dict) -> ModelRecord:
    """The ``record`` of a model folder's sidecar (``where``: its file), as the stage that saved
    the model wrote it."""
    if "record" not in sidecar:
        raise ValueError(f"{where} has no 'record' (a sidecar of an older format: rerun its "
                         f"{sidecar.get('stage', 'unknown')} stage)")
    return ModelRecord.from_dict(f"{where}: record", sidecar["record"])


def read_model_record(model: str | Path) -> ModelRecord | None:
    """The record in ``<model>/sidecar.json``; None where there is none (a hub id or a folder
    without a sidecar)."""
    path = Path(model) / "sidecar.json"
    if not path.is_file():
        return None
    return sidecar_record(str(path), json.loads(path.read_text()))


# Eval JSON "metrics" keys every evaluation has (the report's tables show all of them)
METRIC_NAMES = ("rouge1", "rouge2", "rougeLsum", "rougeL", "gen_len")
NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")  # labels end up in file names


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
        return {"metrics": dict(self.metrics), "metrics_ci95": _json_shape(self.metrics_ci95),
                "engine": self.engine, "identical_share": self.identical_share,
                "record": self.record.to_dict()}

    @property
    def rouge2_ci95(self) -> tuple[float, float] | None:
        ci = self.metrics_ci95.get("rouge2")
        return None if ci is None else (ci[0], ci[1])

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "EvalRecord":
        d = _mapping(where, d)
        metrics = _field(where, d, "metrics", dict)
        for m in METRIC_NAMES:
            if m not in metrics:
                raise ValueError(f"{where}: metrics has no {m!r}")
            _number(where, f"metrics.{m}", metrics[m])
        ci95 = d.get("metrics_ci95") or {}
        if not isinstance(ci95, dict):
            raise ValueError(f"{where}: metrics_ci95 must be an object, got {ci95!r}")
        ci = ci95.get("rouge2")
        if ci is not None:
            if not isinstance(ci, list) or len(ci) != 2:
                raise ValueError(f"{where}: metrics_ci95.rouge2 must be [low, high], got {ci!r}")
            for i in (0, 1):
                _number(where, f"metrics_ci95.rouge2[{i}]", ci[i])
        share = d.get("identical_share")
        return cls(engine=_name(where, "engine", d.get("engine")),
                   metrics={k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)},
                   metrics_ci95=ci95,
                   identical_share=(None if share is None
                                    else _number(where, "identical_share", share)),
                   record=ModelRecord.from_dict(f"{where}: record", d.get("record")))


def labels(where: str, d: dict, keys: tuple[str, ...], hint: str) -> dict[str, str]:
    """The top-level labels ``keys`` of a sidecar (size, dataset, variant, device_label), each a
    name fit for a file name."""
    out = {}
    for key in keys:
        value = d.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: missing top-level {key!r} ({hint})")
        out[key] = _name(where, key, value)
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
        return _json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "BenchCell":
        d = _mapping(where, d)
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise ValueError(f"{where} has no {missing[0]!r} (a benchmark JSON of an older "
                             f"format? rerun the benchmark)")
        runs = _field(where, d, "runs_ms", list)
        steps = _field(where, d, "runs_steps", list)
        memory_of = d["peak_memory_of"]
        if memory_of is not None and not isinstance(memory_of, str):
            raise ValueError(f"{where}.peak_memory_of must be a string or null")
        return cls(
            **{k: _name(where, k, d[k]) for k in ("protocol", "mode", "engine", "inputs")},
            batch_size=_count(where, "batch_size", d["batch_size"]),
            num_beams=_count(where, "num_beams", d["num_beams"]),
            **{k: _number(where, k, d[k]) for k in (
                "source_tokens_mean", "mean_ms", "std_ms", "median_ms", "min_ms", "max_ms",
                "ms_per_step_median", "spread", "load_avg_1m_before", "new_tokens_mean")},
            runs_ms=tuple(_number(where, f"runs_ms[{i}]", t) for i, t in enumerate(runs)),
            runs_steps=tuple(_count(where, f"runs_steps[{i}]", n) for i, n in enumerate(steps)),
            foreign_load=_optional_number(where, "foreign_load", d["foreign_load"]),
            new_tokens_max=_count(where, "new_tokens_max", d["new_tokens_max"]),
            peak_memory_mb=_optional_number(where, "peak_memory_mb", d["peak_memory_mb"]),
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
        return _json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any, *, with_dataset: bool = True) -> "BenchRecord":
        d = _mapping(where, d)
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
            timed_with=tuple(_field(where, d, "timed_with", list)),
            device_label=lab["device_label"],
            device_name=_field(where, d, "device_name", str),
            model_source=_field(where, d, "model_source", str),
            inputs=_name(where, "inputs", d.get("inputs")),
            source_tokens=_count(where, "source_tokens", d["source_tokens"]),
            dtype=_field(where, d, "dtype", str),
            torch_threads=_count(where, "torch_threads", d["torch_threads"]),
            load_avg_1m_end=_number(where, "load_avg_1m_end", d["load_avg_1m_end"]),
            params=_int(where, d, "params"),
            ct2_export=d.get("ct2_export"),
            encoder_layers=_int(where, d, "encoder_layers"),
            decoder_layers=_int(where, d, "decoder_layers"),
            results=tuple(BenchCell.from_dict(f"{where}: results[{i}]", r)
                          for i, r in enumerate(results)))


def _json_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_shape(v) for v in value]
    return value


# ----------------------------------------------------------------------------- checks

def _mapping(where: str, d: Any) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object, got {type(d).__name__}")
    return d


def _field(where: str, d: dict, name: str, kind: type) -> Any:
    if name not in d:
        raise ValueError(f"{where} has no {name!r} (a file of an older format? rerun the "
                         f"stage that wrote it)")
    value = d[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}.{name} must be {kind.__name__}, got {value!r}")
    return value


def _int(where: str, d: dict, name: str, *, optional: bool = False) -> int | None:
    if optional and d.get(name) is None:
        return None
    value = _field(where, d, name, int)
    if value < 0:
        raise ValueError(f"{where}.{name} must be >= 0, got {value}")
    return value


def _fraction(where: str, d: dict, name: str, *, optional: bool = False) -> float | None:
    if optional and d.get(name) is None:
        return None
    value = d.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{where}.{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _blocks(where: str, d: dict, name: str) -> tuple[int, ...]:
    value = _field(where, d, name, list)
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in value):
        raise ValueError(f"{where}.{name} must be a list of block indices, got {value!r}")
    return tuple(value)


def _name(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"{where}: {key} must be a name fit for a file name, got {value!r}")
    return value


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _optional_number(where: str, key: str, value: Any) -> float | None:
    return None if value is None else _number(where, key, value)


def _count(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _phase(where: str, d: Any) -> Phase:
    d = _mapping(where, d)
    stage = _field(where, d, "stage", str)
    if stage not in STAGES:
        raise ValueError(f"{where}.stage must be one of {STAGES}, got {stage!r}")
    variant = d.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise ValueError(f"{where}.variant must be a string or null, got {variant!r}")
    return Phase(stage, variant, _int(where, d, "steps"), _int(where, d, "effective_batch"))


def _protocol(where: str, d: dict) -> str:
    value = _field(where, d, "protocol", str)
    if value not in PROTOCOLS:
        raise ValueError(f"{where}.protocol must be one of {PROTOCOLS}, got {value!r}")
    return value


def _nash(where: str, d: Any) -> NashFacts:
    d = _mapping(where, d)
    missed = d.get("gates_missed_target")
    if missed is not None and not isinstance(missed, bool):
        raise ValueError(f"{where}.gates_missed_target must be true, false or null")
    known = {f.name for f in fields(NashFacts)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}")
    return NashFacts(
        variant=_field(where, d, "variant", str),
        protocol=_protocol(where, d),
        target_sparsity=_fraction(where, d, "target_sparsity"),
        reached_sparsity=_fraction(where, d, "reached_sparsity"),
        gates_expected_sparsity=_fraction(where, d, "gates_expected_sparsity", optional=True),
        mask_sparsity_before_adjustment=_fraction(where, d, "mask_sparsity_before_adjustment",
                                                  optional=True),
        units_removed=_int(where, d, "units_removed", optional=True),
        units_restored=_int(where, d, "units_restored", optional=True),
        gates_missed_target=missed,
        encoder_blocks=_blocks(where, d, "encoder_blocks"),
        decoder_blocks=_blocks(where, d, "decoder_blocks"),
        parameters=_int(where, d, "parameters"))
