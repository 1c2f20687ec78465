"""CTranslate2 export and decoding: float32 gives eager's tokens, NASH widths are padded."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from asymprune import ct2, demo_data, evaluate, settings, settings_io
from asymprune.engine import generate_with
from asymprune.generation import generate
from asymprune.nash.prune import prune_encoder
from asymprune.surgery import keep_blocks
from asymprune.tokenizer import train_tokenizer

pytest.importorskip("ctranslate2")

DEMO_SHAPE = dict(d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=6,
                  num_decoder_layers=6, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=64)
# a NASH-style encoder: per-layer kept heads and FFN units differ (layer 3 keeps no head)
HEADS = [[0, 1, 3], [2], [0, 1, 2, 3], [], [1, 3], [0]]
UNITS = [list(range(0, 256, k)) for k in (2, 3, 1, 5, 4, 7)]


@pytest.fixture(scope="module")
def demo_setup():
    """The full demo's model shape and test documents (configs/demo-full.yaml, seed 0 + 2), random
    weights with EOS made likelier so that rows stop at different steps."""
    from transformers import T5Config, T5ForConditionalGeneration

    train = [r["source"] for r in demo_data.generate(300, 0)]
    test = ["summarize: " + r["source"] for r in demo_data.generate(20, 2)]
    tok = train_tokenizer(train, vocab_size=1000)
    # tie_word_embeddings left unset, as the demo's init_config: decoder outputs are scaled
    cfg = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                   **DEMO_SHAPE)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 6.0
        # never <pad> (the decoder start token): a shallow variant would emit only that
        model.lm_head.weight[tok.pad_token_id] = 0.0
    return model, tok, test


def _nash(base):
    model = copy.deepcopy(base)
    keep_blocks(model, list(range(6)), [0, 5])
    prune_encoder(model, HEADS, UNITS)
    return model.eval()


def _scores(model, tok, test, engine, decoder=None):
    return evaluate.summarize(decoder or model, tok, test, batch_size=20, max_source_length=160,
                              max_new_tokens=64, num_beams=1, device=torch.device("cpu"),
                              engine=engine)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["e6d6", "e6d2", "nash"])
def test_float32_gives_eagers_tokens_on_demo_documents(demo_setup, variant, tmp_path):
    base, tok, test = demo_setup
    model = (_nash(base) if variant == "nash" else
             keep_blocks(copy.deepcopy(base), list(range(6)), [0, 5]).eval()
             if variant == "e6d2" else base)
    info = ct2.export_model(model, tok, tmp_path / "ct2")
    if variant == "nash":
        # padded by hand: heads 4 - (3, 1, 4, 0, 2, 1) = 1 + 3 + 0 + 4 + 2 + 3; units
        # 256 - (128, 86, 256, 52, 64, 37) summed over the 6 layers
        assert (info["padded_heads"], info["padded_ffn_units"]) == (13, 913)
    decoder = ct2.Ct2Model(tmp_path / "ct2", "float32", "cpu", 1)
    eager, eager_len = _scores(model, tok, test, "eager")
    fast, fast_len = _scores(model, tok, test, "ct2-float32", decoder)
    assert fast == eager and fast_len == eager_len
    assert 1 < len(set(eager_len))  # rows stop at different steps: EOS is compared


@pytest.mark.timeout(120)
def test_padded_width_model_equals_the_pruned_one(demo_setup):
    base, tok, test = demo_setup
    pruned = _nash(base)
    full, counts = ct2.pad_to_full_width(pruned)
    ff = full.encoder.block[3].layer[-1].DenseReluDense
    # layer 3 kept every 5th unit: 52 rows, the other 204 rows of wi_0 are zeros
    assert int((ff.wi_0.weight.abs().sum(1) > 0).sum()) == 52
    assert float(full.encoder.block[3].layer[0].SelfAttention.o.weight.abs().sum()) == 0.0
    enc = tok(test[:4], padding=True, return_tensors="pt")
    a = generate(pruned, enc["input_ids"], enc["attention_mask"], max_new_tokens=20)
    b = generate(full, enc["input_ids"], enc["attention_mask"], max_new_tokens=20)
    assert torch.equal(a, b)


@pytest.mark.timeout(120)
def test_fixed_length_and_int8(demo_setup, tmp_path):
    base, tok, test = demo_setup
    ct2.export_model(base, tok, tmp_path / "ct2")
    enc = tok(test[:3], padding=True, return_tensors="pt")
    for engine in ("ct2-float32", "ct2-int8"):
        m = ct2.Ct2Model(tmp_path / "ct2", ct2.compute_type(engine), "cpu", 1)
        out = generate_with(engine, m, enc["input_ids"], enc["attention_mask"],
                            max_new_tokens=12, min_new_tokens=12, use_cache=True)
        # fixed mode: exactly 12 new tokens per row, none of them EOS
        assert out.shape == (3, 13)
        assert not (out[:, 1:] == tok.eos_token_id).any()
    with pytest.raises(ValueError, match="compute_type 'int8'"):
        generate_with("ct2-int8", base, enc["input_ids"], enc["attention_mask"],
                      max_new_tokens=4)


@pytest.mark.timeout(60)
def test_an_activation_ct2_lacks_is_refused(tiny_tokenizer, tmp_path):
    from transformers import T5ForConditionalGeneration

    from conftest import tiny_config

    model = T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer),
                                                   feed_forward_proj="gated-tanh")).eval()
    with pytest.raises(ValueError, match="cannot convert this model.*gated-tanh"):
        ct2.export_model(model, tiny_tokenizer, tmp_path / "ct2")


def test_a_compute_type_the_device_cannot_run_is_refused_naming_the_key():
    with pytest.raises(settings_io.SettingsError, match=r"benchmark\.engines.*ct2-float16"):
        settings_io.build(settings.Benchmark, [("benchmark", {"device": "cpu", "engines":
                                                           ["eager", "ct2-float16"]})])
    settings_io.build(settings.Benchmark, [("benchmark", {"device": "cuda", "engines":
                                                       ["ct2-float16", "ct2-int8_bfloat16"]})])
    with pytest.raises(ValueError, match="not a CTranslate2 engine"):
        ct2.compute_type("ct2-int4")


@pytest.mark.timeout(120)
def test_stage_cli_exports_with_sidecar_and_evaluate_scores_it(tiny_model_dir, news_dir,
                                                               tmp_path):
    out = tmp_path / "ct2"
    assert ct2.main(["--model", str(tiny_model_dir), "--output-dir", str(out)]) == 0
    side = json.loads((out / "sidecar.json").read_text())
    assert side["stage"] == "ct2" and side["padded_heads"] == 0
    common = ["--model", str(tiny_model_dir), "--data-file", str(news_dir / "test.jsonl"),
              "--max-new-tokens", "8", "--batch-size", "4"]
    assert evaluate.main(common + ["--output", str(tmp_path / "e.json"),
                                   "--predictions", str(tmp_path / "e.jsonl")]) == 0
    assert evaluate.main(common + ["--engine", "ct2-float32", "--ct2-model", str(out),
                                   "--reference-predictions", str(tmp_path / "e.jsonl"),
                                   "--output", str(tmp_path / "c.json"),
                                   "--predictions", str(tmp_path / "c.jsonl")]) == 0
    scored = json.loads((tmp_path / "c.json").read_text())
    assert scored["engine"] == "ct2-float32" and scored["identical_share"] == 1.0
    assert "rouge2" in scored["metrics"] and "gen_len" in scored["metrics"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scale", [True, False])
def test_token_log_probs_equal_transformers_with_and_without_output_scaling(scale, tmp_path):
    """Greedy tokens cannot see a wrong logit scale (argmax ignores it); scores can. With
    transformers 5 every config-built T5 reports tie_word_embeddings, while the decoder output
    is scaled only when scale_decoder_outputs says so: the export must follow the latter."""
    from transformers import T5ForConditionalGeneration

    from conftest import tiny_config

    cfg = tiny_config(50)
    cfg.scale_decoder_outputs = scale
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg).eval()
    ct2.export_model(model, ct2.IdVocabulary(50), tmp_path)
    m = ct2.Ct2Model(tmp_path, "float32", "cpu", 1)
    src, tgt = [5, 6, 7, 8, 1], [9, 10, 11]
    got = m.translator.score_batch([[m.tokens[i] for i in src]],
                                   [[m.tokens[i] for i in tgt]])[0].log_probs
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt + [1]])).logits
    want = torch.log_softmax(logits[0], -1)[torch.arange(4), torch.tensor(tgt + [1])]
    assert got == pytest.approx(want.tolist(), abs=1e-4)
