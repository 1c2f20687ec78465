"""What a benchmark generates from: FLAN-T5 architectures with random weights, test documents
truncated or repeated to ``source_tokens``, random tokens, and the padded batches of each
timed round (docs/benchmark.md, "Inputs")."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from asymprune.artifacts import read_jsonl
from asymprune.flan_t5 import flan_t5_config
from asymprune.modeling import DTYPES


def build_arch_model(size: str, variant: str, strategy: str, seed: int,
                     device: torch.device, dtype: str):
    """FLAN-T5 ``size`` at depth ``variant`` with seeded random weights, built on ``device``."""
    from transformers import T5ForConditionalGeneration

    config = flan_t5_config(size, variant, strategy)
    torch.manual_seed(seed)
    with torch.device(device):  # built in place: no 3 GB host copy for large on a GPU
        model = T5ForConditionalGeneration(config)
        # Real FLAN-T5 checkpoints load with an lm_head of their own (T5Config in
        # transformers 5 ties it to the embedding): give it one, so memory traffic matches.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model.to(DTYPES[dtype]).eval()


def fit_length(ids: list[int], n_tokens: int, eos_id: int) -> list[int]:
    """Exactly ``n_tokens`` ids ending in EOS (the ``repeated`` inputs).

    A long source is cut to its first n - 1 tokens; a short one is repeated end to end until
    n - 1 tokens (e.g. 300 tokens, n = 1024: 3 full copies + the first 122 tokens = 1023);
    then EOS. Every position is a real token with attention mask 1.
    """
    if not ids:
        raise ValueError("cannot fit an empty token sequence")
    body = list(itertools.islice(itertools.cycle(ids), n_tokens - 1))
    return body + [eos_id]


def truncate(ids: list[int], n_tokens: int, eos_id: int) -> list[int]:
    """The ``real`` inputs: a document's tokens cut to n, still ending in EOS, as the
    tokenizer's truncation does (a 374-token XSUM document stays 374 tokens long)."""
    if not ids:
        raise ValueError("cannot use an empty token sequence")
    return ids[: n_tokens - 1] + [eos_id] if len(ids) >= n_tokens else ids + [eos_id]


def sources_from_file(path: Path, tokenizer, n_tokens: int, inputs: str) -> list[list[int]]:
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"--data-file {path} has no rows")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the model's tokenizer has no EOS token")
    out = []
    for i, row in enumerate(rows):
        if "source" not in row:
            raise ValueError(f"--data-file {path} row {i} has no 'source' field")
        ids = tokenizer(row["source"], add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"--data-file {path} row {i} (id {row.get('id')!r}) tokenizes to "
                             f"nothing")
        out.append(fit_length(ids, n_tokens, eos) if inputs == "repeated"
                   else truncate(ids, n_tokens, eos))
    return out


def random_sources(vocab_size: int, n_tokens: int, count: int, seed: int,
                   eos_id: int) -> list[list[int]]:
    """Seeded random ids in [2, vocab): 0 is pad and 1 is EOS in every T5 vocabulary."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(2, vocab_size, (count, n_tokens - 1), generator=g)
    return [row + [eos_id] for row in body.tolist()]


def make_batches(sources: list[list[int]], batch_size: int, count: int, pad_id: int,
                 device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches; batch j holds sources j*b .. j*b+b-1 (cycling through the file),
    right-padded to its longest source with attention mask 0 on the padding."""
    batches = []
    for j in range(count):
        rows = [sources[(j * batch_size + i) % len(sources)] for i in range(batch_size)]
        width = max(map(len, rows))
        ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        batches.append((ids.to(device), mask.to(device)))
    return batches
