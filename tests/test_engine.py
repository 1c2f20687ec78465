"""The compiled greedy engine gives the eager path's tokens, for every model shape we prune to.

Every case uses the same decoder (6 blocks of the tiny config) and the same shapes (batch 4,
11 source tokens, 12 new tokens), so the decoding step compiles once (~20 s on one core, cold cache)
and the other cases reuse it; only the eager generations and the encoders differ.
"""

from __future__ import annotations

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune.compiled_engine import generate_compiled
from asymprune.engine import ENGINES, generate_with
from asymprune.generation import generate
from asymprune.modeling import ShapedT5ForConditionalGeneration, load_model
from asymprune.nash.prune import prune_encoder
from asymprune.surgery import keep_blocks
from conftest import tiny_config

VOCAB = 120
NEW = 12
EOS = 1


def _model(n_enc: int = 6, n_dec: int = 6, eos_push: float = 0.0):
    """A tiny T5 whose greedy output varies token to token.

    T5's own init gives near-constant argmaxes (the same token 12 times), which would let a
    wrong cache go unnoticed; weights ~ N(0, 1.5^2 / fan_in) make every step depend on the
    history. ``eos_push`` lengthens the EOS row of lm_head along itself (3 * eos_push units),
    so some rows emit EOS early: with 3.0 the four rows of ``_batch`` stop after 5, 4, 6 and 2
    tokens, with 0.0 none stops within 12 (checked in the tests).
    """
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_config(VOCAB, n_enc=n_enc, n_dec=n_dec)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.5 * p.shape[1] ** -0.5)
        row = model.lm_head.weight[EOS]
        row += eos_push * 3.0 * row / row.norm()
    return model


def _batch():
    """4 sources of 11 tokens; row 1 is padded after 7 (exercises the cross-attention mask)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, mask


def _assert_same(model, **kw):
    ids, mask = _batch()
    eager = generate(model, ids, mask, max_new_tokens=NEW, **kw)
    compiled = generate_compiled(model, ids, mask, max_new_tokens=NEW, **kw)
    assert compiled.dtype == eager.dtype
    assert compiled.tolist() == eager.tolist()
    return eager


def _eos_steps(out: torch.Tensor) -> list[int | None]:
    """Per row, the number of new tokens up to and including EOS (None: no EOS)."""
    rows = out[:, 1:].tolist()
    return [row.index(EOS) + 1 if EOS in row else None for row in rows]


def test_symmetric_model_matches_eager():
    out = _assert_same(_model())
    assert out.shape == (4, 1 + NEW) and _eos_steps(out) == [None] * 4
    assert len(set(out[0, 1:].tolist())) > 3  # a varied sequence, not one token repeated


def test_encoder_shallower_than_decoder_matches_eager():
    """e1d6: the cache must follow the decoder's 6 blocks (the encoder has 1)."""
    model = _model(n_enc=1, n_dec=6)
    assert model.config.num_layers == 1 and len(model.decoder.block) == 6
    _assert_same(model)


def test_block_surgery_model_matches_eager():
    """Encoder block 0 dropped by surgery (its bias moved to the new block 0)."""
    model = keep_blocks(_model(), (2, 5), range(6))
    _assert_same(model)


def test_width_pruned_encoder_matches_eager(tmp_path):
    """A NASH-style student loaded back by load_model: per-layer heads / FFN widths."""
    kept_heads = [[1, 3], [], [0, 1, 2], [2], [0, 3], [0, 1, 2, 3]]
    kept_units = [list(range(0, 48, 2)), list(range(40)), [5, 6, 47], [],
                  list(range(1, 48, 3)), list(range(48))]
    model = prune_encoder(_model(), kept_heads, kept_units)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert isinstance(loaded, ShapedT5ForConditionalGeneration)
    out = _assert_same(loaded)
    assert torch.equal(out, generate(model, *_batch(), max_new_tokens=NEW))


@pytest.mark.parametrize("sync_every", [1, 5])
def test_rows_finishing_at_different_steps(sync_every):
    """Batch 4 with source padding; rows stop at different steps and the batch stops early.

    sync_every=5 reads the "all done" flag only after steps 5 and 10: the step-6 stop must still
    give the eager width (the padding-only step 7..10 columns are cut off).
    """
    model = _model(n_enc=1, eos_push=3.0)
    ids, mask = _batch()
    eager = generate(model, ids, mask, max_new_tokens=NEW)
    steps = _eos_steps(eager)
    assert steps == [5, 4, 6, 2] and eager.shape[1] == 1 + 6   # what makes this test able to fail
    compiled = generate_compiled(model, ids, mask, max_new_tokens=NEW, sync_every=sync_every)
    assert compiled.tolist() == eager.tolist()
    for row, n in zip(compiled.tolist(), steps):
        assert row[n + 1:] == [0] * (len(row) - n - 1)    # pad after EOS


def test_fixed_length_mode_gives_exactly_that_many_tokens():
    """min_new_tokens == max_new_tokens: EOS is banned, every row has NEW new tokens."""
    model = _model(n_enc=1, eos_push=3.0)   # a model that wants to stop after 1-6 tokens
    out = _assert_same(model, min_new_tokens=NEW)
    assert out.shape == (4, 1 + NEW) and _eos_steps(out) == [None] * 4
    # a min below max bans EOS for the first 5 tokens only; rows 0, 1 and 3 wanted it earlier
    out = _assert_same(model, min_new_tokens=5)
    assert all(n is None or n > 5 for n in _eos_steps(out))


def test_generate_with_dispatches_and_rejects_beam_search():
    assert ENGINES[:2] == ("eager", "compiled") and "ct2-int8" in ENGINES
    model = _model()
    ids, mask = _batch()
    kw = dict(max_new_tokens=NEW, use_cache=True)    # what the benchmark passes
    eager = generate_with("eager", model, ids, mask, **kw)
    assert torch.equal(generate_with("compiled", model, ids, mask, num_beams=1, **kw), eager)
    with pytest.raises(ValueError, match="num_beams=2"):
        generate_with("compiled", model, ids, mask, num_beams=2, **kw)
    with pytest.raises(ValueError, match="do_sample"):
        generate_with("compiled", model, ids, mask, do_sample=True, **kw)
    with pytest.raises(ValueError, match="unknown engine"):
        generate_with("fast", model, ids, mask, **kw)
    with pytest.raises(ValueError, match="eval"):
        generate_compiled(model.train(), ids, mask, max_new_tokens=NEW)


def test_source_lengths_in_one_bucket_share_the_compiled_step():
    """11 and 40 source tokens both round up to one 64-slot bucket: one runner (one compile),
    and the masked spare slots leave the tokens equal to eager's."""
    from asymprune import compiled_engine as engine

    model = _model()
    ids, mask = _batch()
    g = torch.Generator().manual_seed(2)
    long_ids = torch.randint(3, VOCAB, (4, 40), generator=g)
    long_mask = torch.ones_like(long_ids)
    long_mask[2, 25:] = 0
    for i, m in ((ids, mask), (long_ids, long_mask)):
        eager = generate(model, i, m, max_new_tokens=NEW)
        assert generate_compiled(model, i, m, max_new_tokens=NEW).tolist() == eager.tolist()
    assert engine.SOURCE_BUCKET == 64
    assert [key[2] for key in engine._RUNNERS[model]] == [64]  # (structure, batch, capacity, ...)


def test_generation_config_min_new_tokens_is_applied_and_other_processors_refused():
    """transformers says which logits processors a generation_config adds: min_new_tokens set
    there is applied as eager applies it; repetition_penalty is refused, naming it."""
    model = _model(n_enc=1, eos_push=3.0)  # rows want EOS after 5, 4, 6 and 2 tokens
    model.generation_config.min_new_tokens = NEW
    out = _assert_same(model)              # neither engine is given min_new_tokens
    assert _eos_steps(out) == [None] * 4
    model.generation_config.repetition_penalty = 1.3
    ids, mask = _batch()
    with pytest.raises(ValueError, match="RepetitionPenaltyLogitsProcessor"):
        generate_compiled(model, ids, mask, max_new_tokens=NEW)


def test_runner_cache_is_bounded_by_bytes_and_freed_when_the_model_changes(monkeypatch):
    from asymprune import compiled_engine as engine

    model = _model()
    tokens = engine._special_tokens(model)
    a = engine._runner(model, 4, 64, NEW, tokens)
    # by hand, batch 4, 4 heads x 8 dims, 6 layers, fp32: self-attention K and V over 12
    # positions 2 x 4*4*12*8*4 = 12,288 B, cross-attention K and V over 64 slots
    # 2 x 4*4*64*8*4 = 65,536 B, per layer 77,824, x 6 = 466,944; plus the step's own buffers:
    # buckets 12*12*8 = 1,152, causal 144, eos_mask 120, enc_bias 4*64*4 = 1,024, token 32,
    # pos 8, min_new 8, finished 4, n_done 8, out 4*13*8 = 416: 2,916. Total 469,860.
    assert a.nbytes == 469_860
    b = engine._runner(model, 2, 64, NEW, tokens)
    assert set(engine._RUNNERS[model].values()) == {a, b}
    # a bound below two runners: the least recently used (a) goes, the new one stays
    monkeypatch.setattr(engine, "RUNNER_CACHE_BYTES", a.nbytes + b.nbytes - 1)
    c = engine._runner(model, 1, 64, NEW, tokens)
    assert a not in engine._RUNNERS[model].values() and c in engine._RUNNERS[model].values()
    assert engine.cached_runner_bytes() <= engine.RUNNER_CACHE_BYTES
    # block surgery on the same object: every runner of the old structure is freed
    keep_blocks(model, list(range(6)), [0, 1, 2])
    d = engine._runner(model, 4, 64, NEW, engine._special_tokens(model))
    assert list(engine._RUNNERS[model].values()) == [d]


def test_a_skipped_cuda_graph_is_an_error_and_a_torch_without_the_settings_is_named():
    from asymprune import compiled_engine as engine

    assert engine.check_cuda_graphs(0, 2) and engine.check_cuda_graphs(0, None)
    with pytest.raises(RuntimeError, match="skipped 1 graph"):
        engine.check_cuda_graphs(1, 2)
    with pytest.raises(RuntimeError, match="not captured as a CUDA graph"):
        engine.check_cuda_graphs(0, 0)
    # torch 2.6's dynamo config had cache_size_limit, not recompile_limit
    from types import SimpleNamespace

    assert engine._dynamo_patch() == engine._DYNAMO_PATCH
    with pytest.raises(RuntimeError, match=r"torch >= 2.7 .*'recompile_limit'"):
        engine._dynamo_patch(SimpleNamespace(cache_size_limit=8))
