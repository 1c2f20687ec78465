"""Block removal keeps the teacher's computation and survives save_pretrained/from_pretrained."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune.generation import generate
from asymprune.surgery import keep_blocks

ALL6 = (0, 1, 2, 3, 4, 5)


def _inputs(vocab: int, batch: int = 2, src: int = 11, tgt: int = 7):
    g = torch.Generator().manual_seed(1)
    # ids >= 3 avoid <pad>/</s>/<unk>; no padding, so no attention mask is needed
    ids = torch.randint(3, vocab, (batch, src), generator=g)
    dec = torch.randint(3, vocab, (batch, tgt), generator=g)
    dec[:, 0] = 0  # decoder_start_token_id
    return ids, dec


@torch.no_grad()
def _logits(model, ids, dec):
    return model(input_ids=ids, decoder_input_ids=dec).logits


def _bias(stack, block=0):
    return stack.block[block].layer[0].SelfAttention.relative_attention_bias.weight


def test_keep_all_is_identity(tiny_model):
    ids, dec = _inputs(tiny_model.config.vocab_size)
    before = _logits(tiny_model, ids, dec)
    out = keep_blocks(tiny_model, ALL6, ALL6)
    assert out is tiny_model
    assert torch.equal(_logits(tiny_model, ids, dec), before)


@pytest.mark.parametrize("enc,dec", [((0,), (2, 5)), ((1, 3), ALL6), ((1, 3), (4,))],
                         ids=["e0-d25", "e13-dall", "e13-d4"])
def test_pruned_model_round_trips(tiny_model, tmp_path, enc, dec):
    teacher = copy.deepcopy(tiny_model)
    model = keep_blocks(tiny_model, enc, dec)

    for stack, teacher_stack, kept in ((model.encoder, teacher.encoder, enc),
                                       (model.decoder, teacher.decoder, dec)):
        assert len(stack.block) == len(kept)
        # the new first block carries the teacher's block-0 bias, the others none
        assert torch.equal(_bias(stack), _bias(teacher_stack))
        for i, block in enumerate(stack.block):
            attn = block.layer[0].SelfAttention
            assert attn.has_relative_attention_bias == (i == 0)
            assert hasattr(attn, "relative_attention_bias") == (i == 0)
            assert attn.layer_idx == i
            if block.is_decoder:
                assert block.layer[1].EncDecAttention.layer_idx == i
                assert not block.layer[1].EncDecAttention.has_relative_attention_bias
        # every other kept weight is the teacher's, block for block
        for i, t in enumerate(kept):
            assert torch.equal(stack.block[i].layer[-1].layer_norm.weight,
                               teacher_stack.block[t].layer[-1].layer_norm.weight)
            assert torch.equal(stack.block[i].layer[0].SelfAttention.q.weight,
                               teacher_stack.block[t].layer[0].SelfAttention.q.weight)

    cfgs = (model.config, model.encoder.config, model.decoder.config)
    assert [(c.num_layers, c.num_decoder_layers) for c in cfgs] == [
        (len(enc), len(dec)), (len(enc), len(dec)), (len(dec), len(dec))]

    model.save_pretrained(tmp_path)
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert (reloaded.config.num_layers, reloaded.config.num_decoder_layers) == (len(enc), len(dec))
    assert torch.equal(_bias(reloaded.encoder), _bias(teacher.encoder))
    assert torch.equal(_bias(reloaded.decoder), _bias(teacher.decoder))
    assert [b.layer[0].SelfAttention.layer_idx for b in reloaded.decoder.block] == list(range(len(dec)))
    ids, dec_ids = _inputs(model.config.vocab_size)
    diff = (_logits(reloaded, ids, dec_ids) - _logits(model, ids, dec_ids)).abs().max().item()
    assert diff <= 1e-6


@torch.no_grad()
def test_pruned_stacks_compute_the_teachers_kept_blocks(tiny_model):
    """Pruned = teacher's kept blocks run in order on the teacher's block-0 position bias."""
    teacher = copy.deepcopy(tiny_model)
    enc, dec = (1, 3), (2, 5)  # both drop block 0: the bias must have moved
    model = keep_blocks(tiny_model, enc, dec)
    ids, dec_ids = _inputs(model.config.vocab_size)
    src_len, tgt_len = ids.shape[1], dec_ids.shape[1]

    # Encoder: bidirectional, no padding -> no mask; the bias is computed once by block 0.
    h = teacher.encoder.embed_tokens(ids)
    bias = teacher.encoder.block[0].layer[0].SelfAttention.compute_bias(src_len, src_len)
    for t in enc:
        h = teacher.encoder.block[t](h, None, bias)[0]
    enc_manual = teacher.encoder.final_layer_norm(h)
    enc_out = model.encoder(input_ids=ids).last_hidden_state
    assert torch.allclose(enc_out, enc_manual, atol=1e-6, rtol=0)

    # Decoder: causal self-attention. Fold the causal mask into the bias (0 on and below the
    # diagonal, the dtype minimum above it) and run cross-attention on the encoder output
    # with a zero cross bias (cross-attention has no relative bias).
    h = teacher.decoder.embed_tokens(dec_ids)
    causal = torch.full((tgt_len, tgt_len), torch.finfo(h.dtype).min).triu(1)
    self_bias = (teacher.decoder.block[0].layer[0].SelfAttention.compute_bias(tgt_len, tgt_len)
                 + causal)
    cross_bias = torch.zeros(1, model.config.num_heads, tgt_len, src_len)
    for t in dec:
        h = teacher.decoder.block[t](h, None, self_bias, enc_manual, None, cross_bias)[0]
    dec_manual = teacher.decoder.final_layer_norm(h)
    dec_out = model.decoder(input_ids=dec_ids, encoder_hidden_states=enc_out).last_hidden_state
    assert torch.allclose(dec_out, dec_manual, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_shallow_encoder_generates_only_through_helper(tiny_model, num_beams):
    """e1d6: transformers 5 sizes generate()'s default KV cache from the encoder depth
    (config.num_hidden_layers maps to num_layers = 1), so decoder layer 1 indexes past a
    1-layer cache -> IndexError, greedy or beam. asymprune.generation.generate passes an
    explicit cache that grows with the decoder."""
    model = keep_blocks(tiny_model, (0,), ALL6)
    ids, _ = _inputs(model.config.vocab_size, batch=2, src=9)
    with pytest.raises(IndexError):
        model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, num_beams=num_beams)
    out = generate(model, ids, max_new_tokens=6, min_new_tokens=6, num_beams=num_beams)
    assert out.shape == (2, 1 + 6)  # decoder start token + 6 new tokens
    # The cached run must match a cache-free run: renumbered layer_idx index the cache right.
    no_cache = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6,
                              do_sample=False, num_beams=num_beams, use_cache=False)
    assert torch.equal(out, no_cache)


@pytest.mark.parametrize("enc,dec,msg", [
    ((), ALL6, "at least one"),
    ((0, 0), ALL6, "unique"),
    ((3, 1), ALL6, "sorted"),
    ((0, 6), ALL6, r"0\.\.5"),
    (ALL6, (-1, 2), r"0\.\.5"),
])
def test_bad_indices_are_refused(tiny_model, enc, dec, msg):
    with pytest.raises(ValueError, match=msg):
        keep_blocks(tiny_model, enc, dec)
    assert len(tiny_model.encoder.block) == 6  # validated before any edit


# --- the prune_layers stage -------------------------------------------------------------------

def test_prune_layers_cli(tiny_model, tiny_model_dir, tmp_path):
    from asymprune.modeling import count_parameters, load_model, load_tokenizer
    from asymprune.prune_layers import main
    from asymprune.provenance import read_json

    expected = keep_blocks(copy.deepcopy(tiny_model), (0, 3, 5), ALL6)
    out = tmp_path / "e3d6" / "pruned"
    assert main(["--model", str(tiny_model_dir), "--variant", "e3d6", "--layer-selection", "auto",
                 "--output", str(out)]) == 0

    side = read_json(out / "sidecar.json")
    assert side["stage"] == "prune_layers"
    assert side["args"]["layer_selection"] == "auto" and side["variant"] == "e3d6"
    # 6 layers have no published table: spaced, round-half-up(j * 5 / 2) -> 0, 3, 5
    assert side["kept_blocks"] == {"encoder": [0, 3, 5], "decoder": list(ALL6)}
    assert side["teacher_layers"] == {"encoder": 6, "decoder": 6}
    assert side["parameters"]["before"] == count_parameters(tiny_model)
    assert side["parameters"]["after"] == count_parameters(expected)
    assert side["parameters"]["after"] < side["parameters"]["before"]

    pruned = load_model(out).eval()
    assert (pruned.config.num_layers, pruned.config.num_decoder_layers) == (3, 6)
    assert len(load_tokenizer(out)) == tiny_model.config.vocab_size
    ids, dec = _inputs(tiny_model.config.vocab_size)
    assert torch.equal(_logits(pruned, ids, dec), _logits(expected, ids, dec))
    assert not list(tmp_path.glob("e3d6/pruned.tmp-*"))  # atomic_dir renamed into place


@pytest.mark.parametrize("variant", ["e6d6", "e7d1", "d3"])
def test_prune_layers_refuses_bad_variants(tiny_model_dir, tmp_path, capsys, variant):
    from asymprune.prune_layers import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tiny_model_dir), "--variant", variant, "--output", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--variant" in err
    if variant == "e6d6":
        assert "nothing to prune" in err
    assert not (tmp_path / "o").exists()


def test_prune_layers_published_needs_a_table(tiny_model_dir, tmp_path):
    from asymprune.prune_layers import main

    with pytest.raises(ValueError, match="no published layer table for a 6-layer stack"):
        main(["--model", str(tiny_model_dir), "--variant", "e3d6", "--layer-selection", "published",
              "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
