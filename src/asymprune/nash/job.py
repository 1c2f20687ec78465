"""One NASH run as the command line gives it (:class:`NashJob`: the stage's own arguments, the
settings it trains with, what the variant id fixes) and what a variant id decides: the
student's encoder mode, target sparsity and protocol (:class:`StudentSpec`), the settings it
trains with (:func:`settings_for`) and the teacher blocks the student keeps
(:func:`student_blocks`)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from asymprune import settings, settings_io, variants


@dataclass(frozen=True)
class StudentSpec:
    """What the variant id fixes about the student (facts of the id, not settings)."""

    encoder_mode: str          # l0, layerss or none
    target_sparsity: float
    protocol: str              # paper, or released (a -rel id)


@dataclass(frozen=True)
class NashJob:
    """One NASH run as the command line gives it: the stage's own arguments (paths, variant,
    ``--layer-selection``), the settings it trains with (after what the variant implies,
    :func:`settings_for`) and what the id fixes."""

    args: argparse.Namespace
    settings: settings.NashTrain
    spec: StudentSpec

    def record(self, **more) -> dict:
        """The sidecar's ``args`` and the checkpoint fingerprint's fields: all three."""
        return settings_io.record(self.args, self.settings, **dataclasses.asdict(self.spec),
                                  **more)


def settings_for(variant: str, s: settings.NashTrain) -> tuple[settings.NashTrain, StudentSpec]:
    """The settings a variant trains with and what its id fixes. An equal-budget baseline
    keeps the depth variant's blocks without gates (none in the decoder either) and the same
    steps and batches; ``kd`` keeps the distillation objective, ``ce`` trains on the labels
    alone. The gates' learning rate defaults to the multipliers'. Made once, here: the
    sidecar records these values."""
    v = variants.parse_nash_stage(variant)
    protocol = variants.protocol(variant)
    changes: dict = {}
    if isinstance(v, variants.BaselineVariant):
        spec = StudentSpec("none", 0.0, protocol)
        changes["decoder_gates"] = False
        if v.objective == "ce":
            changes.update(prediction_loss="ce", distill_enc=0.0, distill_dec=0.0)
    else:
        spec = StudentSpec(v.encoder_mode, v.target_sparsity, protocol)
    if s.gate_learning_rate is None:
        changes["gate_learning_rate"] = s.reg_learning_rate
    return dataclasses.replace(s, **changes), spec


def student_blocks(variant: str, layer_selection: str, n_enc: int,
                   n_dec: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(encoder, decoder) blocks of the teacher the student keeps: a NASH variant's selection,
    or an equal-budget baseline's depth variant by ``layer_selection`` (the blocks its
    re-fine-tuned twin keeps)."""
    v = variants.parse_nash_stage(variant)
    if isinstance(v, variants.BaselineVariant):
        return v.blocks(n_enc, n_dec, layer_selection)
    return v.blocks(n_enc, n_dec)
