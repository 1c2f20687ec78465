"""Generation that works for every depth variant.

transformers 5 sizes the default KV cache of ``generate()`` from the *encoder* depth, so a
model whose encoder is shallower than its decoder (e1d6, e2d6, ...) raises IndexError on the
first decoding step. Passing an explicit empty ``EncoderDecoderCache`` makes the cache grow
with the decoder, whatever the depths.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


def fresh_cache() -> EncoderDecoderCache:
    """An empty self-attention + cross-attention cache; a new one per ``generate`` call."""
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             **kwargs: Any) -> torch.Tensor:
    """``model.generate`` with a fresh explicit cache (greedy unless kwargs say otherwise)."""
    kwargs.setdefault("num_beams", 1)
    kwargs.setdefault("do_sample", False)
    # Beam search needs it too (e1d6 with num_beams=2 also raises IndexError without it);
    # generate() expands and reorders a passed cache per beam like its own.
    kwargs.setdefault("past_key_values", fresh_cache())
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
