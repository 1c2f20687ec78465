"""What the training stages (finetune, NASH) share: batch arithmetic, the tokenizing of
(source, target) pairs and how errors name a setting. Pure Python, no torch."""

from __future__ import annotations


def settings_key(config_key: str | None) -> str:
    """How errors name a setting: ``config key nash.train.<field>`` from the workflow (the
    stage got ``--config-key nash.train``), ``setting <field>`` from a bare command line."""
    return f"config key {config_key}." if config_key else "setting "


def batch_plan(effective: int, per_device: int, divisor: int, world_size: int,
               key: str = "setting ") -> tuple[int, int]:
    """(per-device batch, accumulation) that give exactly ``effective`` examples per step.

    ``divisor`` (an OOM retry) divides the per-device batch and multiplies accumulation:
    64 = 8 x 8 x 1 becomes 4 x 16 x 1; 8 = 4 x 1 x 2 devices becomes 2 x 2 x 2. ``key``
    prefixes the setting names in errors (:func:`settings_key`)."""
    if divisor < 1 or per_device % divisor:
        raise ValueError(f"{key}per_device_batch_size {per_device} is not divisible by "
                         f"--batch-divisor {divisor} (an OOM retry halves the per-device batch)")
    per_device //= divisor
    per_step = per_device * world_size
    if effective % per_step:
        raise ValueError(f"{key}effective_batch_size {effective} is not a multiple of "
                         f"per-device batch {per_device} x {world_size} device(s) = {per_step}")
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
