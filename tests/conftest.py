"""Shared fixtures: a tiny T5 and a tokenizer trained here, so no test needs the hub."""

from __future__ import annotations

import os
import random

# No test asks the hub (nor waits for it): the hub-id check of the workflow, which every
# Snakemake run below makes, then reports ids it cannot find in the local cache as unchecked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)  # 2-core machines: tests run beside other work

WORDS = ("the council approved a new budget for schools and roads on monday while critics said "
         "taxes would rise storm closed bridge river city police reported minister announced "
         "plan to cut prices energy company shares fell after profits dropped").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from asymprune.tokenizer import train_tokenizer

    tok = train_tokenizer(make_texts(400), vocab_size=120)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return tok


def tiny_config(vocab_size: int, n_enc: int = 6, n_dec: int = 6, **kw):
    from transformers import T5Config

    cfg = dict(vocab_size=vocab_size, d_model=32, d_ff=48, d_kv=8, num_heads=4,
               num_layers=n_enc, num_decoder_layers=n_dec, feed_forward_proj="gated-gelu",
               relative_attention_num_buckets=8, relative_attention_max_distance=20,
               dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
               tie_word_embeddings=False)
    cfg.update(kw)
    return T5Config(**cfg)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer))).eval()


@pytest.fixture
def tiny_model_dir(tiny_model, tiny_tokenizer, tmp_path):
    """A saved tiny model folder with its tokenizer, as every stage's --model expects."""
    path = tmp_path / "model"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokdir")
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def news_dir(tmp_path_factory):
    """Generated demo data: train 64, validation 8, test 8 rows."""
    from asymprune import data

    out = tmp_path_factory.mktemp("news")
    data.main(["--kind", "generated", "--num-samples", "train=64", "validation=8", "test=8",
               "--output-dir", str(out)])
    return out
