"""Loading models and tokenizers the same way in every stage.

``name_or_path`` is a hub id (``google/flan-t5-small``, what users run) or a local folder
written by ``save_pretrained`` (what the offline demo and the tests use): one code path.
A structurally pruned model (per-layer head counts or FFN widths, see ``asymprune.nash``)
records its shapes in its config; ``load_model`` rebuilds them before loading weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_tokenizer(name_or_path: str | Path):
    return AutoTokenizer.from_pretrained(str(name_or_path))


def load_model(name_or_path: str | Path, dtype: str = "fp32") -> T5ForConditionalGeneration:
    """A T5 seq2seq model from the hub or a local folder, in the given dtype."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    model = T5ForConditionalGeneration.from_pretrained(str(name_or_path), dtype=DTYPES[dtype])
    return model


def count_parameters(model: torch.nn.Module, *, include_lm_head: bool = False) -> int:
    """Distinct parameters (shared embeddings counted once); lm_head left out by default,
    as Table 1 of the asymmetry paper counts FLAN-T5 (small: 60,511,616)."""
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or (not include_lm_head and name.startswith("lm_head.")):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
