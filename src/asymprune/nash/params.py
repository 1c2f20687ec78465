"""THE count of the encoder's prunable parameters, and sparsity. Pure (no torch import).

NASH prunes encoder attention heads and FFN intermediate units. One head owns a d_kv-wide
slice of q, k, v (rows) and o (columns): 4 * d_model * d_kv parameters (T5-base: 4 * 768 * 64
= 196,608). One FFN unit owns a row of each input projection and a column of wo: gated-GELU
(FLAN-T5: wi_0, wi_1, wo) 3 * d_model (T5-base v1.1 width 768: 2,304); ReLU T5 (wi, wo)
2 * d_model. Layer norms, embeddings and the shared relative-position bias are not prunable.

Sparsity = 1 - kept / full, both counted by :func:`encoder_prunable_params` over the *teacher's*
encoder (full) and the student's (kept). The same function serves the sparsity controller
(with expected, fractional, differentiable counts: the arithmetic below only multiplies and
adds, so torch tensors pass through unchanged), the deterministic mask, the stage's reached
sparsity and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EncoderDims:
    """The widths that fix the size of a prunable unit (and the teacher's full counts)."""
    n_layers: int
    n_heads: int
    d_ff: int
    d_model: int
    d_kv: int
    gated: bool

    @classmethod
    def from_config(cls, config: Any) -> EncoderDims:
        return cls(n_layers=config.num_layers, n_heads=config.num_heads, d_ff=config.d_ff,
                   d_model=config.d_model, d_kv=config.d_kv, gated=bool(config.is_gated_act))

    @property
    def head_params(self) -> int:
        return 4 * self.d_model * self.d_kv          # q, k, v rows + o columns

    @property
    def ffn_unit_params(self) -> int:
        return (3 if self.gated else 2) * self.d_model   # (wi_0, wi_1,) wo  or  wi, wo

    def full_params(self) -> int:
        return encoder_prunable_params([self.n_heads] * self.n_layers,
                                       [self.d_ff] * self.n_layers, self)


def encoder_prunable_params(heads_per_layer: Sequence, ffn_units_per_layer: Sequence,
                            dims: EncoderDims):
    """Prunable encoder parameters of layers with these head / FFN-unit counts.

    Counts may be ints (a real model) or expected counts (floats or tensors: the sparsity
    controller). Tiny-test example (d_model 32, d_kv 8, gated): 3 heads and 40 units in one
    layer -> 3 * 1024 + 40 * 96 = 6,912.
    """
    if len(heads_per_layer) != len(ffn_units_per_layer):
        raise ValueError(f"{len(heads_per_layer)} head counts but {len(ffn_units_per_layer)} FFN "
                         f"widths: one of each per encoder layer")
    total = 0
    for heads, units in zip(heads_per_layer, ffn_units_per_layer):
        total = total + heads * dims.head_params + units * dims.ffn_unit_params
    return total


def sparsity(kept_params, full_params):
    """Fraction of prunable parameters removed: 1 - kept / full."""
    if not full_params:
        raise ValueError("full parameter count is zero: nothing to measure sparsity against")
    return 1 - kept_params / full_params
