"""Which engine decodes: one entry point, :func:`generate_with`, for every stage that generates.

``eager`` is ``asymprune.generation.generate`` (HF ``model.generate``, greedy or beam search);
``compiled`` is ``asymprune.compiled_engine.generate_compiled``, a static KV cache and one
``torch.compile``d decoding step, greedy only and token-identical to eager;
``ct2-<compute type>`` decodes an ``asymprune.ct2.Ct2Model`` (the CTranslate2 export). Each
engine takes the same arguments and returns the same layout: column 0 is the decoder start
token, a row that emitted EOS is padded with ``pad_token_id`` after it.
"""

from __future__ import annotations

from typing import Any

import torch

from asymprune import generation
from asymprune.compiled_engine import generate_compiled
from asymprune.settings import ENGINES  # eager, compiled, ct2-<compute type>


def generate_with(engine: str, model, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kw: Any) -> torch.Tensor:
    """Generate with ``engine`` (one of ``ENGINES``); kwargs as for ``generation.generate``.

    ``compiled`` is greedy only: ``num_beams`` must be 1 and ``do_sample`` False; it takes
    ``max_new_tokens`` (required) and ``min_new_tokens``. ``ct2-<type>``: ``model`` is an
    ``asymprune.ct2.Ct2Model`` loaded at that compute type (``asymprune.ct2.generate_ct2``).
    """
    if engine == "eager":
        return generation.generate(model, input_ids, attention_mask, **kw)
    if engine.startswith("ct2-"):
        from asymprune import ct2

        if not isinstance(model, ct2.Ct2Model) or model.compute_type != ct2.compute_type(engine):
            raise ValueError(f"engine {engine} needs an asymprune.ct2.Ct2Model loaded with "
                             f"compute_type {ct2.compute_type(engine)!r}, got {model!r}")
        return ct2.generate_ct2(model, input_ids, attention_mask, **kw)
    if engine != "compiled":
        raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
    num_beams = kw.pop("num_beams", 1)
    if num_beams != 1:
        raise ValueError(f"the compiled engine does greedy decoding only (num_beams=1), got "
                         f"num_beams={num_beams}; use --engine eager for beam search")
    if kw.pop("do_sample", False):
        raise ValueError("the compiled engine does greedy decoding only; do_sample=True needs "
                         "--engine eager")
    if not kw.pop("use_cache", True):
        raise ValueError("the compiled engine always uses its static KV cache (use_cache=False "
                         "is not supported)")
    unknown = sorted(set(kw) - {"max_new_tokens", "min_new_tokens"})
    if unknown:
        raise ValueError(f"the compiled engine takes max_new_tokens and min_new_tokens only; "
                         f"unsupported: {unknown}")
    return generate_compiled(model, input_ids, attention_mask, **kw)
