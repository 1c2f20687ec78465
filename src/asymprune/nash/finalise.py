"""The end of the NASH stage, after training: the deterministic encoder masks
(:func:`final_masks`, accounted for by :func:`sparsity_report`), physical pruning checked
against the masked model's logits (:func:`prune`), the pruned encoder's sparsity
(:func:`reached_sparsity`), validation CE / KL to the teacher (:func:`evaluate`), the loss
history's summary (:func:`summarize_history`) and the typed records finalisation returns
(:class:`FinalMasks`, :class:`Pruned`, :class:`NashResult`). ``NashRecipe.finalise``
(``nash.recipe``) runs them in that order; the recipe then writes the output and sidecar."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from asymprune import settings
from asymprune.nash.loss import cross_entropy, kl_distill
from asymprune.nash.masking import EncoderGates, masks_from_indices
from asymprune.nash.objective import GatedStudent
from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity
from asymprune.nash.prune import encoder_widths, fold_decoder_gates, prune_encoder

log = logging.getLogger("asymprune.nash")

MASK_CHECK_ATOL = 1e-4        # masked vs physically pruned logits


# ---------------------------------------------------------------------------------------------
# what finalisation returns


@dataclass(frozen=True)
class FinalMasks:
    """The encoder units kept (per layer: head and FFN-unit indices; None without L0 gates)
    and the gates' account of reaching the target (:func:`sparsity_report`; {} without)."""

    heads: list | None
    units: list | None
    report: dict

    def kept_lists(self) -> dict[str, list[list[int]]]:
        """``nash_masks.json``: the kept indices as plain lists."""
        return {"encoder_kept_heads": [list(map(int, h)) for h in (self.heads or [])],
                "encoder_kept_ffn_units": [list(map(int, u)) for u in (self.units or [])]}


@dataclass(frozen=True)
class Pruned:
    """What was pruned: the masks, the decoder gates' factors folded into the weights, the
    masked-vs-pruned logits check, and the pruned encoder's widths and sparsity."""

    masks: FinalMasks
    decoder_gate_factors: tuple | None
    masked_vs_pruned_max_abs_diff: float | None
    reached_sparsity: float
    encoder_prunable_kept: int
    heads_per_layer: list[int]
    ffn_units_per_layer: list[int]


@dataclass(frozen=True)
class NashResult:
    """The finalised student: what was pruned, and its validation CE / KL to the teacher."""

    pruned: Pruned
    validation: dict[str, float]


# ---------------------------------------------------------------------------------------------
# the steps, in the order NashRecipe.finalise runs them; then the sidecar's loss summary


def final_masks(gate_module: EncoderGates | None, target: float,
                s: settings.NashTrain) -> FinalMasks:
    """The encoder units the gates keep (l0: deterministic masks at the target, the
    gates' own expected sparsity and what the adjustment moved), or none (no encoder gates)."""
    if gate_module is None:
        return FinalMasks(None, None, {})
    expected = float(gate_module.expected_sparsity().detach())
    heads, units, info = gate_module.deterministic(target, s.sparsity_tolerance)
    report = sparsity_report(expected, info, target, s.gate_miss_tolerance)
    if report["gates_missed_target"]:
        log.warning("the gates' expected sparsity %.4f is %.1f points off the target "
                    "%.2f (more than gate_miss_tolerance %.3f; train longer or raise "
                    "reg_learning_rate); the per-layer rounded mask is at %.4f, the "
                    "adjustment removed %d / restored %d units to reach %.4f",
                    expected, 100 * abs(expected - target), target,
                    s.gate_miss_tolerance, info["sparsity_rounded"], info["units_removed"],
                    info["units_restored"], info["sparsity"])
    return FinalMasks(heads, units, report)


def sparsity_report(expected: float, info: dict, target: float, miss_tolerance: float) -> dict:
    """The sidecar's account of how the encoder reached its sparsity, as plain fields.

    ``gates_missed_target`` judges the gates alone (before the deterministic mask moves units
    to meet the budget), e.g. target 0.30, expected 0.27, tolerance 0.02: missed (3 points)."""
    return {"gates_expected_sparsity": expected,
            "mask_sparsity_before_adjustment": info["sparsity_rounded"],
            "units_removed": info["units_removed"],
            "units_restored": info["units_restored"],
            "gates_missed_target": abs(expected - target) > miss_tolerance}


def prune(model: GatedStudent, masks: FinalMasks, factors, check_rows: list, collate,
          dims: EncoderDims, device) -> float | None:
    """Prune ``model``'s student's encoder to ``masks`` and fold the decoder gates' ``factors``
    into the weights, checking that the gated model with its final masks and the pruned /
    folded one give the same logits on ``check_rows`` (collated by ``collate``); returns their
    max |difference| (None: nothing to do)."""
    l0 = model.gates is not None
    if not l0 and factors is None:
        return None
    student = model.student
    check = collate(check_rows)
    check.pop("labels")
    with torch.no_grad():
        if l0:
            model.masks.set(*masks_from_indices(masks.heads, masks.units, dims, device))
        if factors is not None:
            model.dec_masks.set(*factors)
        masked_logits = student(**check).logits
    for m in (model.masks, model.dec_masks):
        if m is not None:
            m.remove()
    if l0:
        prune_encoder(student, masks.heads, masks.units)
    if factors is not None:
        fold_decoder_gates(student, *factors)
    with torch.no_grad():
        pruned_logits = student(**check).logits
    diff = float((masked_logits - pruned_logits).abs().max())
    if diff > MASK_CHECK_ATOL:
        raise RuntimeError(f"physically pruned logits differ from the masked model's "
                           f"by {diff:.3g} > {MASK_CHECK_ATOL}: the head/FFN "
                           f"surgery or the decoder fold is wrong")
    return diff


def reached_sparsity(student, dims: EncoderDims) -> tuple[float, int]:
    """Sparsity of the student's (physical) encoder against the teacher's: one param count."""
    heads, units = encoder_widths(student)
    kept = encoder_prunable_params(heads, units, dims)
    return float(sparsity(kept, dims.full_params())), int(kept)


@torch.no_grad()
def evaluate(student, teacher, data, collate, batch_size: int,
             cfg: settings.NashTrain) -> dict[str, float]:
    """Token-averaged CE (labels) and KL to the teacher of the student on ``data``."""
    student.eval()
    ce_sum = kl_sum = 0.0
    tokens = 0
    for i in range(0, len(data), batch_size):
        batch = collate(data[i:i + batch_size])
        labels = batch.pop("labels")
        s, t = student(**batch).logits, teacher(**batch).logits
        mask = labels != -100
        n = int(mask.sum())
        ce_sum += float(cross_entropy(s, labels)) * n
        kl_sum += float(kl_distill(s, t, mask, cfg.kl_temperature, cfg.kl_direction)) * n
        tokens += n
    return {"ce": ce_sum / tokens, "kl": kl_sum / tokens, "tokens": tokens}


def summarize_history(history: list[dict]) -> dict:
    if not history:
        return {}
    tail = history[-max(1, len(history) // 10):]   # the last 10 % of logged steps
    keys = [k for k in history[0] if k != "step"]
    return {"logged_steps": len(history), "first": history[0], "last": history[-1],
            "tail_mean": {k: sum(h[k] for h in tail) / len(tail) for k in keys},
            "tail_steps": [tail[0]["step"], tail[-1]["step"]]}
