"""NASH as released: decoder gates (trained, folded into the pruned model), the validation-best
checkpoint instead of the last, label padding, and the -rel protocol's settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune import settings as S
from asymprune import rouge
from asymprune import variants as V
from asymprune.modeling import load_model
from asymprune.nash import gates
from asymprune.nash import cli as nash
from asymprune.nash.masking import DecoderGates, DecoderMasks
from asymprune.nash.prune import fold_decoder_gates
from conftest import tiny_config
from test_nash_cli import argv, teacher_dir  # noqa: F401  (the module's teacher fixture)


def test_soft_mask_value_is_the_released_deterministic_gate():
    # sigmoid(0.8 * ln 100 / (2/3)) = sigmoid(5.5262) = 1 / (1 + 0.003982) = 0.99603: the
    # factor the released code folds into a decoder head at the clamp; log_alpha 0 -> 0.5
    la = torch.tensor([math.log(100), 0.0, -math.log(100)])
    assert gates.soft_mask_value(la).tolist() == pytest.approx([0.99603, 0.5, 0.00397], abs=1e-5)


def test_decoder_gates_train_and_fold_into_the_weights(tiny_tokenizer):
    """Every kind of decoder gate moves in training; the gated model with its fold factors and
    the folded model give the same logits (max |diff| <= 1e-4)."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer), n_dec=3)).eval()
    dg = DecoderGates(3, 4, 48)
    # heads start at log_alpha 10, where every sample is clipped to 1 (no gradient); the
    # first clamp brings them to ln 100, where a sample z = clip(1.2 s - 0.1) stays below 1
    # when s < 11/12, i.e. logistic noise < beta ln 11 - ln 100 = 1.599 - 4.605 = -3.007:
    # probability sigmoid(-3.007) = 4.7 % per head and step, so gradient does flow
    dg.constrain_(math.log(100))
    masks = DecoderMasks(model)
    ids = torch.randint(2, len(tiny_tokenizer), (2, 12))
    dec = torch.randint(2, len(tiny_tokenizer), (2, 7))
    before = [p.detach().clone() for p in dg.parameters()]
    opt = torch.optim.AdamW(dg.parameters(), lr=0.01, weight_decay=0.0)
    for _ in range(20):
        masks.set(*dg.sample())
        model(input_ids=ids, decoder_input_ids=dec).logits.logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
        dg.constrain_(math.log(100))
    for b, p in zip(before, dg.parameters()):
        assert not torch.equal(b, p.detach())
    assert dg.self_log_alpha.max() <= math.log(100) + 1e-6
    factors = dg.fold_factors()
    with torch.no_grad():
        masks.set(*factors)
        gated = model(input_ids=ids, decoder_input_ids=dec).logits
        masks.remove()
        plain = model(input_ids=ids, decoder_input_ids=dec).logits
        fold_decoder_gates(model, *factors)
        folded = model(input_ids=ids, decoder_input_ids=dec).logits
    assert (gated - folded).abs().max() <= 1e-4
    assert (gated - plain).abs().max() > 1e-2       # the factors do change the model


def test_the_stage_trains_decoder_gates_and_saves_the_folded_model(teacher_dir, news_dir,
                                                                    tmp_path):
    out = tmp_path / "out"
    assert nash.main(argv(teacher_dir, news_dir, out, tmp_path / "ck",
                          "--decoder-gates", "true")) == 0
    side = json.loads((out / "sidecar.json").read_text())
    assert side["args"]["decoder_gates"] is True
    assert side["masked_vs_pruned_max_abs_diff"] <= 1e-4
    f = side["decoder_gate_factors"]
    # heads sit at the clamp (0.99603); FFN units started at log_alpha 0 (factor 0.5) and moved
    assert f["self_heads"]["max"] == pytest.approx(0.99603, abs=1e-5)
    assert abs(f["ffn_units"]["mean"] - 0.5) > 1e-3
    assert load_model(out).config.num_decoder_layers == 3


def _selection_run(teacher, news, out, ckpt, steps, *extra):
    args = argv(teacher, news, out, ckpt, "--lr-scheduler", "constant",
                "--sparsity-warmup-fraction", "0", *extra)
    args[args.index("--max-steps") + 1] = str(steps)
    return nash.main(args)


def test_best_checkpoint_selection_picks_the_validation_best(teacher_dir, news_dir, tmp_path,
                                                             monkeypatch):
    """Scores 10, 30, 20 at steps 2, 4, 6 (the last worse than step 4): the run saves the
    student of step 4, pruned, i.e. exactly what a 4-step run saves (constant lr and target,
    so the first 4 steps of both runs are the same)."""
    seen = []

    def fake_score(predictions, references):
        assert len(predictions) == len(references) == 4          # selection_samples
        seen.append(len(seen))
        return {"rougeL": [10.0, 30.0, 20.0][len(seen) - 1]}

    monkeypatch.setattr(rouge, "score", fake_score)
    assert _selection_run(teacher_dir, news_dir, tmp_path / "best", tmp_path / "ck1", 6,
                          "--checkpoint-selection", "best", "--eval-steps", "2",
                          "--selection-samples", "4", "--selection-start-fraction", "0") == 0
    sel = json.loads((tmp_path / "best" / "sidecar.json").read_text())["selection"]
    assert (sel["rule"], sel["chosen_step"], sel["chosen_score"]) == ("best", 4, 30.0)
    assert sel["scores"] == [[2, 10.0], [4, 30.0], [6, 20.0]]
    assert _selection_run(teacher_dir, news_dir, tmp_path / "four", tmp_path / "ck2", 4) == 0
    a, b = (load_model(tmp_path / d).state_dict() for d in ("best", "four"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    six = tmp_path / "six"
    assert _selection_run(teacher_dir, news_dir, six, tmp_path / "ck3", 6) == 0
    c = load_model(six).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].shape == c[k].shape)


def test_selection_starts_at_its_fraction_of_the_steps(teacher_dir, news_dir, tmp_path,
                                                       monkeypatch):
    # 6 steps, fraction 0.5: nothing is scored before step ceil(3.0) = 3; eval_steps 1
    monkeypatch.setattr(rouge, "score", lambda p, r: {"rougeL": 1.0})
    assert _selection_run(teacher_dir, news_dir, tmp_path / "o", tmp_path / "ck", 6,
                          "--checkpoint-selection", "best", "--eval-steps", "1",
                          "--selection-samples", "4", "--selection-start-fraction", "0.5",
                          "--variant", "nash-d3-uniform-none") == 0
    sel = json.loads((tmp_path / "o" / "sidecar.json").read_text())["selection"]
    assert sel["started_at_step"] == 3
    assert [s for s, _ in sel["scores"]] == [3, 4, 5, 6]
    assert sel["chosen_step"] == 3          # equal scores: the first stays the best


def test_the_last_pair_is_distilled_after_final_layer_norm(tiny_tokenizer):
    """A student whose decoder final_layer_norm weight is doubled matches every block output
    of its teacher (a copy) exactly; only the last pair, taken after the norm, differs: by
    the teacher's normed output (2 n - n = n). A low selection's last pair (teacher block 1 of
    6) is not the teacher's final hidden state and stays a block output."""
    import copy

    from asymprune.nash.loss import hidden_mse
    from asymprune.nash.objective import BlockOutputs, final_normed

    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer))).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.decoder.final_layer_norm.weight.mul_(2)
    t_out, s_out = BlockOutputs(teacher.decoder), BlockOutputs(student.decoder)
    ids = torch.randint(2, len(tiny_tokenizer), (2, 10))
    dec = torch.randint(2, len(tiny_tokenizer), (2, 6))
    with torch.no_grad():
        teacher(input_ids=ids, decoder_input_ids=dec)
        student(input_ids=ids, decoder_input_ids=dec)
    t_h, s_h = t_out.take(), s_out.take()
    pairs = [(i, i) for i in range(6)]
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert float(hidden_mse(s_h, t_h, pairs, mask)) == 0.0          # block outputs: equal
    s_n, t_n = final_normed(student.decoder, teacher.decoder, s_h, t_h, pairs)
    assert all(torch.equal(a, b) for a, b in zip(s_n[:-1], s_h[:-1]))
    n = teacher.decoder.final_layer_norm(t_h[-1]).detach()
    assert torch.allclose(t_n[-1], n) and torch.allclose(s_n[-1], 2 * n)
    assert float(hidden_mse(s_n, t_n, pairs, mask)) == pytest.approx(float((n ** 2).mean()))
    low = [(0, 0), (1, 1)]
    s_l, t_l = final_normed(student.decoder, teacher.decoder, s_h[:2], t_h, low)
    assert s_l is not None and torch.equal(s_l[-1], s_h[1]) and torch.equal(t_l[-1], t_h[-1])
