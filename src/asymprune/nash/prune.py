"""Physical removal of encoder heads and FFN units (transformers 5 has no ``prune_heads``).

Which units survive is decided elsewhere (``gates.deterministic_masks``); this module only
edits the modules. Per layer i with kept heads H_i and kept FFN units U_i:

- q, k, v keep the rows of the kept heads (head h owns rows h*d_kv .. (h+1)*d_kv - 1), o keeps
  the same columns; e.g. d_kv 8, heads (0, 2): rows 0..7 and 16..23.
- wi_0, wi_1 (or wi) keep rows U_i, wo keeps columns U_i.
- The relative position bias (block 0, all teacher heads) is kept whole: every layer reads
  the slice of its kept heads (``modeling.HeadPrunedT5Attention``).
- The shapes are recorded in ``model.config`` so ``modeling.load_model`` rebuilds them.
A layer may keep no head (its attention adds zero) or no FFN unit (its FFN adds zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asymprune.modeling import LAYER_SHAPES_KEY, apply_layer_shapes


def encoder_widths(model) -> tuple[list[int], list[int]]:
    """(heads, FFN units) per encoder layer of a live model, pruned or not."""
    heads, units = [], []
    for block in model.encoder.block:
        attn = block.layer[0].SelfAttention
        heads.append(attn.o.in_features // attn.key_value_proj_dim)
        units.append(block.layer[-1].DenseReluDense.wo.in_features)
    return heads, units


def _head_rows(heads: Sequence[int], d_kv: int) -> list[int]:
    return [h * d_kv + r for h in heads for r in range(d_kv)]


@torch.no_grad()
def prune_encoder(model, kept_heads: Sequence[Sequence[int]],
                  kept_units: Sequence[Sequence[int]]):
    """Keep only the given heads / FFN units (indices into the full layer) in each encoder
    layer, in place; returns ``model``. The encoder must not be width-pruned already."""
    if getattr(model.config, LAYER_SHAPES_KEY, None) is not None:
        raise ValueError("this encoder is already width-pruned; prune the unpruned model once")
    n = len(model.encoder.block)
    if len(kept_heads) != n or len(kept_units) != n:
        raise ValueError(f"need kept heads and units for each of {n} encoder layers, got "
                         f"{len(kept_heads)} and {len(kept_units)}")
    cfg = model.config
    for i, u in enumerate(kept_units):
        if list(u) != sorted(set(u)) or any(not 0 <= j < cfg.d_ff for j in u):
            raise ValueError(f"encoder layer {i}: FFN units must be sorted, unique, in "
                             f"0..{cfg.d_ff - 1}; got {list(u)}")
    old = []  # the weights to carry over, sliced before the modules are replaced
    for block, heads, units in zip(model.encoder.block, kept_heads, kept_units):
        attn = block.layer[0].SelfAttention
        ff = block.layer[-1].DenseReluDense
        rows = torch.tensor(_head_rows(heads, attn.key_value_proj_dim), dtype=torch.long,
                            device=attn.q.weight.device)
        cols = torch.tensor(list(units), dtype=torch.long, device=ff.wo.weight.device)
        old.append({
            "bias": getattr(attn, "relative_attention_bias", None),
            "q": attn.q.weight[rows], "k": attn.k.weight[rows], "v": attn.v.weight[rows],
            "o": attn.o.weight[:, rows],
            "wo": ff.wo.weight[:, cols],
            **{name: getattr(ff, name).weight[cols] for name in ("wi_0", "wi_1", "wi")
               if hasattr(ff, name)},
        })
    apply_layer_shapes(model, {"encoder": {"kept_heads": [list(h) for h in kept_heads],
                                           "d_ff": [len(u) for u in kept_units]}})
    for block, w in zip(model.encoder.block, old):
        attn = block.layer[0].SelfAttention
        ff = block.layer[-1].DenseReluDense
        if w["bias"] is not None:
            attn.relative_attention_bias = w["bias"]   # the same module: untouched weights
        for name in ("q", "k", "v", "o"):
            getattr(attn, name).weight = nn.Parameter(w[name].contiguous())
        for name in ("wi_0", "wi_1", "wi", "wo"):
            if name in w:
                getattr(ff, name).weight = nn.Parameter(w[name].contiguous())
    return model


@torch.no_grad()
def fold_decoder_gates(model, self_f: torch.Tensor, cross_f: torch.Tensor,
                       ffn_f: torch.Tensor) -> None:
    """Fold per-unit decoder gate values into the weights, in place: a head's factor scales
    its d_kv input columns of ``o`` (self- and cross-attention), an FFN unit's its column of
    ``wo``. ``o(x * z) = (o.weight * z) x`` for a bias-free linear map, so the folded model
    equals the gated one. E.g. d_kv 8, head 1 at 0.996: o columns 8..15 times 0.996."""
    for i, block in enumerate(model.decoder.block):
        for attn, f in ((block.layer[0].SelfAttention, self_f), (block.layer[1].EncDecAttention,
                                                                 cross_f)):
            w = attn.o.weight
            w.mul_(f[i].repeat_interleave(attn.key_value_proj_dim).to(w.device, w.dtype))
        wo = block.layer[-1].DenseReluDense.wo.weight
        wo.mul_(ffn_f[i].to(wo.device, wo.dtype))
