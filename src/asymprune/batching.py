"""What the training stages (finetune, NASH) share: batch arithmetic and its run flags, the
tokenizing of (source, target) pairs. Pure Python, no torch."""

from __future__ import annotations

import argparse

from asymprune.settings_io import key_name


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The training stages' (finetune, NASH) "run" flags: the OOM-retry divisor that
    :func:`batch_plan` applies, and the device."""
    r = parser.add_argument_group("run")
    r.add_argument("--batch-divisor", type=int, default=1,
                   help="divide the per-device batch by this and multiply accumulation by it "
                        "(OOM retries); the effective batch is unchanged")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def batch_plan(effective: int, per_device: int, divisor: int, world_size: int,
               block: str | None = None) -> tuple[int, int]:
    """(per-device batch, accumulation) that give exactly ``effective`` examples per step.

    ``divisor`` (an OOM retry) divides the per-device batch and multiplies accumulation:
    64 = 8 x 8 x 1 becomes 4 x 16 x 1; 8 = 4 x 1 x 2 devices becomes 2 x 2 x 2. ``block``:
    the config block the settings came from (``--config-key``), which errors name
    (``settings_io.key_name``)."""
    if divisor < 1 or per_device % divisor:
        raise ValueError(f"{key_name(block, 'per_device_batch_size')} {per_device} is not "
                         f"divisible by --batch-divisor {divisor} (an OOM retry halves the "
                         f"per-device batch)")
    per_device //= divisor
    per_step = per_device * world_size
    if effective % per_step:
        raise ValueError(f"{key_name(block, 'effective_batch_size')} {effective} is not a "
                         f"multiple of per-device batch {per_device} x {world_size} "
                         f"device(s) = {per_step}")
    return per_device, effective // per_step


def encode_pairs(tokenizer, sources: list[str], targets: list[str], max_source_length: int,
                 max_target_length: int) -> dict[str, list[list[int]]]:
    """``{input_ids, attention_mask, labels}``: sources and targets truncated to their
    lengths, targets through ``text_target`` (as HF ``run_summarization``)."""
    enc = tokenizer(sources, max_length=max_source_length, truncation=True)
    enc["labels"] = tokenizer(text_target=targets, max_length=max_target_length,
                              truncation=True)["input_ids"]
    return {k: enc[k] for k in ("input_ids", "attention_mask", "labels")}


def label_pad_id(padding: str, tokenizer) -> int:
    """The id the collator pads labels with: -100 for ``label_padding: ignore`` (left out of
    every loss), the tokenizer's pad id for ``pad`` (counted, as NASH's released code: 0 for
    T5)."""
    return -100 if padding == "ignore" else tokenizer.pad_token_id
