"""Typed records the evaluate stage writes and the report reads (pure Python, no torch).

How a model came to be is spread over the sidecars of the stages that made it: the final
fine-tune's ``sidecar.json`` holds, as ``parent``, the sidecar of the stage it started from
(``prune_layers``, or the NASH stage with its gates and sparsities). The evaluate stage walks
that chain once and writes one :class:`ModelRecord` at the top level of its JSON (``record``);
the report builds its NASH and budget tables from those records only (``from_dict`` checks
every field), never from other stages' nested keys.

Budget: the optimizer steps and examples (steps x effective batch) each model was trained
for *after* the teacher, phase by phase. E.g. a NASH variant: NASH stage 320 steps x 8 = 2,560
examples + final fine-tune 32 x 32 = 1,024, so 3,584 examples; the re-fine-tuned e6d2: 1,024.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
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


def model_record(sidecar: dict | None, encoder_layers: int, decoder_layers: int) -> ModelRecord:
    """The record of a model from its own sidecar (None: a hub model or a folder without one,
    i.e. a teacher whose training is not ours to count) and its measured depth."""
    phases: list[Phase] = []
    nash = None
    node = sidecar
    while node is not None:
        stage = node.get("stage")
        if stage == "finetune":
            if node.get("parent") is None:
                break  # the teacher's own fine-tune: before the budget we count
            phases.append(Phase("finetune", None, int(node["metrics"]["global_step"]),
                                int(node["batch"]["effective"])))
        elif stage == "nash":
            phases.append(Phase("nash", node["variant"], int(node["training"]["steps"]),
                                int(node["batch"]["effective"])))
            nash = _nash_facts(node)
        elif stage != "prune_layers":  # block removal trains nothing
            raise ValueError(f"unknown stage {stage!r} in a model's sidecar chain")
        node = node.get("parent")
    return ModelRecord(encoder_layers, decoder_layers, tuple(reversed(phases)), nash)


def _nash_facts(sc: dict) -> NashFacts:
    def opt(key, kind):
        value = sc.get(key)
        return None if value is None else kind(value)

    return NashFacts(
        variant=sc["variant"], protocol=sc["protocol"],
        target_sparsity=float(sc["target_sparsity"]),
        reached_sparsity=float(sc["reached_sparsity"]),
        gates_expected_sparsity=opt("expected_sparsity_final", float),
        mask_sparsity_before_adjustment=opt("mask_sparsity_before_adjustment", float),
        units_removed=opt("adjustment_units_removed", int),
        units_restored=opt("adjustment_units_restored", int),
        gates_missed_target=opt("gates_missed_target", bool),
        encoder_blocks=tuple(sc["kept"]["encoder_blocks"]),
        decoder_blocks=tuple(sc["kept"]["decoder_blocks"]),
        parameters=int(sc["parameters"]["pruned"]))


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
        raise ValueError(f"{where} has no {name!r} (an eval JSON of an older format? rerun "
                         f"the evaluation)")
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
