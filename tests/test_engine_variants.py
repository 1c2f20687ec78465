"""The compiled engine gives the eager engine's tokens for every variant the demo evaluates.

The full demo's model shape (configs/demo-full.yaml: d_model 128, 6 + 6 blocks, gated-GELU; the
demo's is the same at half the width), its test set
(``asymprune.demo_data``, 100 documents, the demo's seed), a tokenizer trained here, and each of
the 16 depth variants plus a NASH-style model (2 uniform decoder blocks, width-pruned encoder)
cut from one seeded model, decoded through the evaluate stage's own ``summarize`` with each
engine. Random weights are used so that no training is needed; a bias towards EOS makes rows
stop at different steps, so the early-stop path is compared too. Marked ``slow`` (17 compiles).
"""

from __future__ import annotations

import copy

import pytest
import torch

from asymprune import demo_data, variants
from asymprune.evaluate import summarize
from asymprune.nash.prune import prune_encoder
from asymprune.tokenizer import train_tokenizer

pytestmark = pytest.mark.slow

DEMO_SHAPE = dict(d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=6,
                  num_decoder_layers=6, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=64)


@pytest.fixture(scope="module")
def demo_setup():
    from transformers import T5Config, T5ForConditionalGeneration

    train = [r["source"] for r in demo_data.generate(300, 0)]
    test = ["summarize: " + r["source"] for r in demo_data.generate(100, 2)]  # demo seed 0 + 2
    tok = train_tokenizer(train, vocab_size=1000)
    cfg = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                   **DEMO_SHAPE)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        # EOS within a few dozen steps for some rows, not all: early stops differ per row
        model.lm_head.weight[tok.eos_token_id] *= 3.0
    return model, tok, test


def _variant_model(base, variant):
    model = copy.deepcopy(base)
    from asymprune.surgery import keep_blocks

    v = variants.parse(variant)
    if isinstance(v, variants.NashVariant):
        enc, dec = v.blocks(6, 6)
        keep_blocks(model, enc, dec)
        # a narrow encoder as NASH leaves it: per-layer heads and FFN widths differ
        heads = [[0, 1, 3], [2], [0, 1, 2, 3], [], [1, 3], [0]]
        units = [list(range(0, 256, k)) for k in (2, 3, 1, 5, 4, 7)]
        prune_encoder(model, heads, units)
        return model
    return keep_blocks(model, *v.blocks(6, 6))


@pytest.mark.parametrize("variant", list(variants.PAPER) + ["nash-d2-uniform-l0s30"])
def test_compiled_equals_eager_on_the_demo_test_set(demo_setup, variant):
    base, tok, test = demo_setup
    model = _variant_model(base, variant).eval()
    # one batch of all 100 documents: one compile per variant (the eval stage batches 50)
    kw = dict(batch_size=100, max_source_length=160, max_new_tokens=64, num_beams=1,
              device=torch.device("cpu"))
    eager, eager_len = summarize(model, tok, test, engine="eager", **kw)
    compiled, compiled_len = summarize(model, tok, test, engine="compiled", **kw)
    assert compiled_len == eager_len
    assert compiled == eager
    if variant == "e6d6":
        assert 1 < len(set(eager_len))  # rows stop at different steps: early stop is compared
