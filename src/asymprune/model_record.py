"""The record of a model folder (its ``sidecar.json``'s ``record``): how the model came to be.

Every stage that saves a model folder (finetune, prune_layers, the NASH stage) builds its
:class:`ModelRecord` from its parent model's record (:func:`derive`) and writes it with
``to_dict()``; evaluate reads it back (:func:`sidecar_record`), checks it against the model it
loaded and puts it into its ``EvalRecord`` (``asymprune.records``), which the report reads.
A module of its own: the training stages import it, so only an edit of the model record (not
of the evaluation's or the benchmark's) changes their code hash and retrains models.

Budget: the optimizer steps and examples (steps x effective batch) each model was trained
for *after* the teacher, phase by phase. Each stage appends its own phase to its parent's:
the teacher's fine-tune counts none, block removal trains nothing, a re-fine-tune or the NASH
stage adds one. E.g. a NASH variant: NASH stage 320 steps x 8 = 2,560 examples + final
fine-tune 32 x 32 = 1,024, so 3,584 examples; the re-fine-tuned e6d2: 1,024.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from asymprune import record_checks as C
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
        return C.json_shape(asdict(self))

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
        return C.json_shape(asdict(self))

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "ModelRecord":
        """Checked: a wrong or missing field is a ValueError naming ``where`` and the field."""
        d = C.mapping(where, d)
        _known(where, d, cls)
        phases = C.field(where, d, "phases", list)
        nash = d.get("nash")
        return cls(
            encoder_layers=C.integer(where, d, "encoder_layers"),
            decoder_layers=C.integer(where, d, "decoder_layers"),
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


def read_sidecar(model: str | Path) -> tuple[dict | None, ModelRecord | None]:
    """``<model>/sidecar.json`` (kept as provenance by the stages that build on the model) and
    the record in it; (None, None) where there is none (a hub id or a folder without one)."""
    path = Path(model) / "sidecar.json"
    if not path.is_file():
        return None, None
    sidecar = json.loads(path.read_text())
    return sidecar, sidecar_record(str(path), sidecar)


def read_model_record(model: str | Path) -> ModelRecord | None:
    """The record in ``<model>/sidecar.json``; None where there is none."""
    return read_sidecar(model)[1]


def _known(where: str, d: dict, cls: type) -> None:
    """A field the record does not have is an error (a typo, or a newer format)."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}")


def _phase(where: str, d: Any) -> Phase:
    d = C.mapping(where, d)
    _known(where, d, Phase)
    stage = C.field(where, d, "stage", str)
    if stage not in STAGES:
        raise ValueError(f"{where}.stage must be one of {STAGES}, got {stage!r}")
    variant = d.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise ValueError(f"{where}.variant must be a string or null, got {variant!r}")
    return Phase(stage, variant, C.integer(where, d, "steps"),
                 C.integer(where, d, "effective_batch"))


def _protocol(where: str, d: dict) -> str:
    value = C.field(where, d, "protocol", str)
    if value not in PROTOCOLS:
        raise ValueError(f"{where}.protocol must be one of {PROTOCOLS}, got {value!r}")
    return value


def _nash(where: str, d: Any) -> NashFacts:
    d = C.mapping(where, d)
    missed = d.get("gates_missed_target")
    if missed is not None and not isinstance(missed, bool):
        raise ValueError(f"{where}.gates_missed_target must be true, false or null")
    _known(where, d, NashFacts)
    return NashFacts(
        variant=C.field(where, d, "variant", str),
        protocol=_protocol(where, d),
        target_sparsity=C.fraction(where, d, "target_sparsity"),
        reached_sparsity=C.fraction(where, d, "reached_sparsity"),
        gates_expected_sparsity=C.fraction(where, d, "gates_expected_sparsity", optional=True),
        mask_sparsity_before_adjustment=C.fraction(where, d, "mask_sparsity_before_adjustment",
                                                   optional=True),
        units_removed=C.integer(where, d, "units_removed", optional=True),
        units_restored=C.integer(where, d, "units_restored", optional=True),
        gates_missed_target=missed,
        encoder_blocks=C.blocks(where, d, "encoder_blocks"),
        decoder_blocks=C.blocks(where, d, "decoder_blocks"),
        parameters=C.integer(where, d, "parameters"))
