"""Physical head / FFN pruning = masking, survives save -> load_model, and counts agree."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune.generation import generate
from asymprune.modeling import (LAYER_SHAPES_KEY, ShapedT5ForConditionalGeneration,
                                apply_layer_shapes, count_parameters, load_model)
from asymprune.nash.masking import EncoderGates, EncoderMasks, masks_from_indices
from asymprune.nash.params import EncoderDims, encoder_prunable_params
from asymprune.nash.prune import encoder_widths, prune_encoder
from asymprune.surgery import keep_blocks
from conftest import tiny_config

# Layer 0 (owner of the position bias) loses two heads, layer 1 loses every head, layer 3
# every FFN unit, layer 5 keeps everything.
KEPT_HEADS = [[1, 3], [], [0, 1, 2], [2], [0, 3], [0, 1, 2, 3]]
KEPT_UNITS = [list(range(0, 48, 2)), list(range(40)), [5, 6, 47], [], list(range(1, 48, 3)),
              list(range(48))]


def _inputs(vocab: int):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (2, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0                      # padding in the second row exercises the mask path
    ids[1, 9:] = 0
    dec = torch.randint(3, vocab, (2, 6), generator=g)
    dec[:, 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


@torch.no_grad()
def _logits(model, batch):
    return model(**batch).logits


def _model(vocab: int, **kw):
    """An eval-mode tiny T5 with dropout on: a module left in training mode shows."""
    torch.manual_seed(0)
    kw.setdefault("dropout_rate", 0.1)
    return T5ForConditionalGeneration(tiny_config(vocab, **kw)).eval()


@pytest.mark.parametrize("ffn", ["gated-gelu", "relu"])
def test_masked_equals_physically_pruned(tiny_tokenizer, ffn):
    model = _model(len(tiny_tokenizer), feed_forward_proj=ffn)
    dims = EncoderDims.from_config(model.config)
    batch = _inputs(model.config.vocab_size)
    full_logits = _logits(model, batch)
    masks = EncoderMasks(model, dims)
    masks.set(*masks_from_indices(KEPT_HEADS, KEPT_UNITS, dims))
    masked = _logits(model, batch)
    assert (masked - full_logits).abs().max() > 1e-3       # the masks do something
    masks.remove()
    assert torch.equal(_logits(model, batch), full_logits)  # hooks gone
    prune_encoder(model, KEPT_HEADS, KEPT_UNITS)
    assert not any(m.training for m in model.modules())
    assert (masked - _logits(model, batch)).abs().max() <= 1e-4
    assert encoder_widths(model) == ([len(h) for h in KEPT_HEADS], [len(u) for u in KEPT_UNITS])
    # the position bias stays whole (all 4 heads) in block 0 only
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    assert bias.weight.shape == (8, 4)
    assert all(not hasattr(b.layer[0].SelfAttention, "relative_attention_bias")
               for b in model.encoder.block[1:])


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_pruned_model_round_trips_through_load_model(tiny_tokenizer, tmp_path, tied):
    """Untied as FLAN-T5, tied as the demo's config-built model."""
    tiny_model = _model(len(tiny_tokenizer), tie_word_embeddings=tied)
    batch = _inputs(tiny_model.config.vocab_size)
    keep_blocks(tiny_model, range(6), (0, 2, 5))          # the NASH student: shallow decoder
    prune_encoder(tiny_model, KEPT_HEADS, KEPT_UNITS)
    before = _logits(tiny_model, batch)
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert isinstance(loaded, ShapedT5ForConditionalGeneration)
    assert getattr(loaded.config, LAYER_SHAPES_KEY) == {
        "encoder": {"kept_heads": KEPT_HEADS, "d_ff": [len(u) for u in KEPT_UNITS]}}
    assert torch.equal(_logits(loaded, batch), before)
    assert count_parameters(loaded) == count_parameters(tiny_model)
    out_a = generate(tiny_model, batch["input_ids"], batch["attention_mask"], max_new_tokens=5)
    out_b = generate(loaded, batch["input_ids"], batch["attention_mask"], max_new_tokens=5)
    assert torch.equal(out_a, out_b)
    # and again (what finetune does: load, train, save): the shapes persist
    loaded.save_pretrained(tmp_path / "again")
    assert torch.equal(_logits(load_model(tmp_path / "again").eval(), batch), before)


def test_head_pruning_after_dropping_encoder_block_0(tiny_tokenizer):
    """Layer selection moves the bias to the new block 0; head pruning must keep it working."""
    model = _model(len(tiny_tokenizer))
    keep_blocks(model, (1, 3, 5), (0, 5))
    dims = EncoderDims.from_config(model.config)
    assert dims.n_layers == 3
    batch = _inputs(model.config.vocab_size)
    heads, units = [[], [1, 2], [3]], [[0, 1], [], list(range(48))]
    masks = EncoderMasks(model, dims)
    masks.set(*masks_from_indices(heads, units, dims))
    masked = _logits(model, batch)
    masks.remove()
    prune_encoder(model, heads, units)
    assert (masked - _logits(model, batch)).abs().max() <= 1e-4


def test_load_model_rejects_weights_that_do_not_match_the_recorded_shapes(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    prune_encoder(tiny_model, KEPT_HEADS, KEPT_UNITS)
    tiny_model.save_pretrained(tmp_path / "m")
    # a missing tensor would otherwise be re-initialised at random without a word
    path = tmp_path / "m" / "model.safetensors"
    tensors = load_file(path)
    del tensors["encoder.block.2.layer.1.DenseReluDense.wo.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "m")
    # a width that disagrees with the tensors: transformers itself refuses
    tiny_model.save_pretrained(tmp_path / "w")
    cfg = getattr(tiny_model.config, LAYER_SHAPES_KEY)["encoder"]
    setattr(tiny_model.config, LAYER_SHAPES_KEY,
            {"encoder": {"kept_heads": cfg["kept_heads"], "d_ff": [48] * 6}})
    tiny_model.config.save_pretrained(tmp_path / "w")
    with pytest.raises(RuntimeError, match="mismatched|ignore_mismatched_sizes"):
        load_model(tmp_path / "w")


def test_invalid_shapes_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="only encoders"):
        apply_layer_shapes(copy.deepcopy(tiny_model), {"decoder": {}})
    with pytest.raises(ValueError, match="sorted, unique"):
        apply_layer_shapes(copy.deepcopy(tiny_model),
                           {"encoder": {"kept_heads": [[1, 0]] * 6, "d_ff": [48] * 6}})
    with pytest.raises(ValueError, match="6 encoder layers"):
        apply_layer_shapes(copy.deepcopy(tiny_model),
                           {"encoder": {"kept_heads": [[0]] * 5, "d_ff": [48] * 5}})
    prune_encoder(tiny_model, KEPT_HEADS, KEPT_UNITS)
    with pytest.raises(ValueError, match="already width-pruned"):
        prune_encoder(tiny_model, KEPT_HEADS, KEPT_UNITS)
    with pytest.raises(ValueError, match="already width-pruned"):
        EncoderMasks(tiny_model, EncoderDims.from_config(tiny_model.config))


def test_param_count_agrees_with_the_model(tiny_model):
    """The one formula vs the real tensors: what pruning removes is what the formula says."""
    dims = EncoderDims.from_config(tiny_model.config)
    before = count_parameters(tiny_model)
    assert encoder_prunable_params(*encoder_widths(tiny_model), dims) == dims.full_params()
    prune_encoder(tiny_model, KEPT_HEADS, KEPT_UNITS)
    after = encoder_prunable_params(*encoder_widths(tiny_model), dims)
    assert before - count_parameters(tiny_model) == dims.full_params() - after
    # 2+0+3+1+2+4 = 12 of 24 heads, 24+40+3+0+16+48 = 131 of 288 units:
    # 12 * 1024 + 131 * 96 = 12,288 + 12,576 = 24,864
    assert after == 24_864


def test_deterministic_gates_mask_then_prune_hits_the_target(tiny_model):
    """Gates with random scores -> deterministic mask at 30 % -> physical model at 30 % +- 0.5."""
    dims = EncoderDims.from_config(tiny_model.config)
    torch.manual_seed(1)
    # log(0.7 / 0.3) = 0.847 for heads and units alike, spread by N(0, 1)
    g = EncoderGates(dims, head_init_log_alpha=math.log(0.7 / 0.3), ffn_init_droprate=0.3,
                     init_std=1.0)
    heads, units, info = g.deterministic(0.3, 0.005)
    prune_encoder(tiny_model, heads, units)
    kept = encoder_prunable_params(*encoder_widths(tiny_model), dims)
    assert abs((1 - kept / dims.full_params()) - 0.3) <= 0.005
    assert info["sparsity"] == pytest.approx(1 - kept / dims.full_params())
