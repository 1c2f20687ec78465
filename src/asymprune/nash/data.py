"""Examples, their order and their split over devices and micro-batches (pure, no torch model).

The training data is an endless stream of epochs, each a permutation of the examples drawn
from ``seed + epoch``. Optimizer step s consumes stream positions [s E, (s + 1) E) (E = the
effective batch), the same examples however many devices share them and however small the
micro-batches are, so that an OOM retry (``--batch-divisor``) or a resume sees the same data:

    E = per-device batch x accumulation x devices, e.g. 8 = 2 x 2 x 2.
    Device r, micro-batch a of step s reads positions s E + (r A + a) P .. + P - 1
    (P per-device batch, A accumulation): step 0 -> device 0: [0, 1], [2, 3]; device 1:
    [4, 5], [6, 7]. Each position is read by exactly one device: no example is duplicated.

A step may straddle two epochs (64 examples, E = 24: step 2 reads 48..63 of epoch 0 and 0..7 of
epoch 1), so ``epochs`` means epochs * n / E optimizer steps, rounded up.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from asymprune.artifacts import read_jsonl
from asymprune.batching import encode_pairs


def tokenized(path: Path, tokenizer, max_source_length: int, max_target_length: int,
              limit: int | None) -> list[dict[str, list[int]]]:
    """``{input_ids, attention_mask, labels}`` per row of a JSONL split, tokenized as
    ``asymprune.finetune`` does (truncation to the two lengths, targets via ``text_target``)."""
    rows = read_jsonl(path)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{path} has no examples")
    for i, r in enumerate(rows):
        if not isinstance(r.get("source"), str) or not isinstance(r.get("target"), str):
            raise ValueError(f"{path} row {i} needs string 'source' and 'target' fields")
    enc = encode_pairs(tokenizer, [r["source"] for r in rows], [r["target"] for r in rows],
                       max_source_length, max_target_length)
    return [{"input_ids": i, "attention_mask": m, "labels": t}
            for i, m, t in zip(enc["input_ids"], enc["attention_mask"], enc["labels"])]


def total_steps(epochs: float, max_steps: int, n_examples: int, effective: int) -> int:
    """Optimizer steps of the run: ``max_steps`` if > 0, else ceil(epochs * n / E)
    (e.g. 3 epochs of 64 examples, E = 4: 48)."""
    if max_steps > 0:
        return max_steps
    return math.ceil(epochs * n_examples / effective)


def micro_batch_positions(step: int, effective: int, per_device: int, accumulation: int,
                          rank: int) -> list[range]:
    """Stream positions of each of this device's micro-batches at ``step`` (module docstring)."""
    base = step * effective + rank * accumulation * per_device
    return [range(base + a * per_device, base + (a + 1) * per_device)
            for a in range(accumulation)]


class ExampleStream:
    """Example index at each position of the endless stream of permuted epochs."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("no training examples")
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if len(self._perms) > 1:           # a step spans at most two epochs when E <= n
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[epoch]

    def indices(self, positions: range) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in positions]
