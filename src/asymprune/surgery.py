"""Remove whole blocks from a T5 encoder-decoder, in place (which blocks: ``asymprune.layers``).

Three things in transformers 5 must be kept consistent by hand when blocks disappear:

1. Only block 0 of each stack owns ``relative_attention_bias`` (in ``layer[0].SelfAttention``;
   cross-attention never has one). Every later block reuses the bias block 0 computed, passed
   down the stack as ``position_bias``. If block 0 is dropped, the teacher's bias module moves
   into the new first block; otherwise the pruned stack would have no position information,
   and after save/reload its new block 0 would get a freshly initialised (random) bias.
2. Each attention's ``layer_idx`` indexes the KV cache, so kept blocks are renumbered 0..k-1;
   stale indices would read and write other layers' cache slots (or past the end).
3. ``num_layers`` / ``num_decoder_layers`` live in ``model.config`` *and* in each stack's own
   deep copy (``model.encoder.config``, ``model.decoder.config``, shared by that stack's
   attentions); ``save_pretrained`` writes ``model.config``, so that copy decides what
   ``from_pretrained`` rebuilds, and the stack copies decide what the live model believes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import T5ForConditionalGeneration


def _check_blocks(blocks: Sequence[int], n_layers: int, stack: str) -> tuple[int, ...]:
    """Sorted, unique, in-range, non-empty block indices, or a ValueError that says which."""
    blocks = tuple(blocks)
    if not blocks:
        raise ValueError(f"{stack}: keep at least one block (got an empty list)")
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
        raise ValueError(f"{stack}: block indices must be ints, got {blocks!r}")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"{stack}: block indices must be unique, got {blocks!r}")
    if list(blocks) != sorted(blocks):
        # Block order is the computation order; a permutation would be a different model.
        raise ValueError(f"{stack}: block indices must be sorted ascending, got {blocks!r}")
    if blocks[0] < 0 or blocks[-1] >= n_layers:
        raise ValueError(f"{stack}: block indices must lie in 0..{n_layers - 1}, got {blocks!r}")
    return blocks


def _keep_stack_blocks(stack: nn.Module, blocks: tuple[int, ...]) -> None:
    old = list(stack.block)
    bias_module = old[0].layer[0].SelfAttention.relative_attention_bias
    kept = [old[i] for i in blocks]
    for new_idx, block in enumerate(kept):
        self_attn = block.layer[0].SelfAttention
        if new_idx == 0:
            # Either this is the teacher's block 0 (the module is already here) or the bias
            # moves here from the dropped block 0: same nn.Embedding object, same weights.
            self_attn.relative_attention_bias = bias_module
            self_attn.has_relative_attention_bias = True
        else:
            if hasattr(self_attn, "relative_attention_bias"):
                del self_attn.relative_attention_bias
            self_attn.has_relative_attention_bias = False
        self_attn.layer_idx = new_idx
        if block.is_decoder:  # layer = [self-attn, cross-attn, FF]
            block.layer[1].EncDecAttention.layer_idx = new_idx
    stack.block = nn.ModuleList(kept)


def keep_blocks(model: T5ForConditionalGeneration, encoder_blocks: Sequence[int],
                decoder_blocks: Sequence[int]) -> T5ForConditionalGeneration:
    """Keep only the given encoder / decoder blocks (0-based, ascending); returns ``model``."""
    enc = _check_blocks(encoder_blocks, len(model.encoder.block), "encoder")
    dec = _check_blocks(decoder_blocks, len(model.decoder.block), "decoder")
    _keep_stack_blocks(model.encoder, enc)
    _keep_stack_blocks(model.decoder, dec)
    n_enc, n_dec = len(enc), len(dec)
    # T5ForConditionalGeneration.__init__ builds the decoder stack from a copy of the config
    # with num_layers = num_decoder_layers; mirror that for the live copies.
    model.config.num_layers = n_enc
    model.config.num_decoder_layers = n_dec
    model.encoder.config.num_layers = n_enc
    model.encoder.config.num_decoder_layers = n_dec
    model.decoder.config.num_layers = n_dec
    model.decoder.config.num_decoder_layers = n_dec
    return model
