"""The NASH objective: hand values of each term, and every term reaches the gradient."""

from __future__ import annotations

import argparse
import copy
import math

import pytest
import torch

from transformers import DataCollatorForSeq2Seq

from asymprune.nash.loss import cross_entropy, hidden_mse, kl_distill, total_loss
from asymprune.nash.masking import EncoderGates
from asymprune.nash.params import EncoderDims
from asymprune.nash.objective import GatedStudent, NashObjective
from asymprune.surgery import keep_blocks


def test_kl_hand_values_and_padding_is_ignored():
    # token 0: teacher p = (1/2, 1/2), student q = (3/4, 1/4); token 1 is padding
    student = torch.tensor([[[math.log(3), 0.0], [5.0, -5.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[True, False]])
    # KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3) = 0.143841
    assert float(kl_distill(student, teacher, mask)) == pytest.approx(0.5 * math.log(4 / 3))
    # KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812
    assert float(kl_distill(student, teacher, mask, direction="student_teacher")) == \
        pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # temperature 2 on logits (2 ln 3 ... ) recovers the same distributions, times T^2 = 4
    assert float(kl_distill(2 * student, 2 * teacher, mask, temperature=2.0)) == \
        pytest.approx(4 * 0.5 * math.log(4 / 3))
    with pytest.raises(ValueError, match="padding"):
        kl_distill(student, teacher, torch.zeros_like(mask))


def test_kl_at_the_released_temperature_2_hand_value():
    """T = 2 (run_NASH.sh distill_temp=2) on student logits (ln 3, 0), teacher (0, 0):
    q = softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (1 + sqrt 3) = (0.633975, 0.366025), p = (1/2, 1/2).
    KL(p || q) = 1/2 ln(0.5 / 0.633975) + 1/2 ln(0.5 / 0.366025) = 1/2 ln((1 + sqrt 3)^2 /
    (4 sqrt 3)) = 0.0372523; times T^2 = 4: 0.149009."""
    student = torch.tensor([[[math.log(3), 0.0]]])
    teacher = torch.zeros(1, 1, 2)
    mask = torch.tensor([[True]])
    r3 = math.sqrt(3)
    expected = 4 * 0.5 * math.log((1 + r3) ** 2 / (4 * r3))
    assert expected == pytest.approx(0.149009, abs=1e-6)
    assert float(kl_distill(student, teacher, mask, temperature=2.0)) == pytest.approx(expected)
    # the same pair at T = 1 is 1/2 ln(4/3) = 0.143841: T changes the distributions, not a scale
    assert float(kl_distill(student, teacher, mask)) == pytest.approx(0.5 * math.log(4 / 3))


def test_cross_entropy_hand_value():
    # logits (ln 3, 0): p = (3/4, 1/4); labels 0 and 1 -> -ln(3/4) - ln(1/4) = 1.673976, / 2
    logits = torch.tensor([[[math.log(3), 0.0], [math.log(3), 0.0], [9.0, 0.0]]])
    labels = torch.tensor([[0, 1, -100]])
    assert float(cross_entropy(logits, labels)) == pytest.approx(
        (-math.log(0.75) - math.log(0.25)) / 2)
    assert float(cross_entropy(logits, labels, tokens=4)) == pytest.approx(
        (-math.log(0.75) - math.log(0.25)) / 4)


def test_micro_batch_terms_add_up_to_the_whole_batch():
    """With the step's token count passed in, two micro-batches give exactly the whole
    batch's token averages (a plain mean of the two micro-batch means would weight the
    3-token row like the 1-token one)."""
    g = torch.Generator().manual_seed(0)
    s_logits, t_logits = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    labels = torch.where(mask, torch.randint(0, 5, (2, 3), generator=g), torch.tensor(-100))
    hs, ht = [torch.randn(2, 3, 4, generator=g)], [torch.randn(2, 3, 4, generator=g)]
    n = int(mask.sum())                                             # 4 tokens
    for f, whole, parts in [
        (kl_distill, kl_distill(s_logits, t_logits, mask, 2.0),
         [kl_distill(s_logits[i:i + 1], t_logits[i:i + 1], mask[i:i + 1], 2.0, tokens=n)
          for i in range(2)]),
        (cross_entropy, cross_entropy(s_logits, labels),
         [cross_entropy(s_logits[i:i + 1], labels[i:i + 1], tokens=n) for i in range(2)]),
        (hidden_mse, hidden_mse(hs, ht, [(0, 0)], mask),
         [hidden_mse([hs[0][i:i + 1]], [ht[0][i:i + 1]], [(0, 0)], mask[i:i + 1], tokens=n)
          for i in range(2)]),
    ]:
        assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-6), f.__name__
        mean_of_means = (float(parts[0]) * n / 3 + float(parts[1]) * n / 1) / 2
        assert mean_of_means != pytest.approx(float(whole), rel=1e-3), f.__name__


def test_hidden_mse_hand_value():
    s = [torch.tensor([[[1.0, 2.0], [9.0, 9.0]]]), torch.tensor([[[0.0, 1.0], [9.0, 9.0]]])]
    t = [torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)]
    mask = torch.tensor([[True, False]])           # second position is padding
    # pair (0, 0): (1 + 4) / (1 token * 2 dims) = 2.5; pair (1, 1): 1 / 2 = 0.5
    assert float(hidden_mse(s, t, [(0, 0)], mask)) == pytest.approx(2.5)
    assert float(hidden_mse(s, t, [(0, 0), (1, 1)], mask)) == pytest.approx(3.0)
    # student layer 1 matched to teacher layer 0
    assert float(hidden_mse(s, t, [(1, 0)], mask)) == pytest.approx(0.5)


def test_total_loss_is_the_papers_weighted_sum():
    kl, enc, dec, reg = (torch.tensor(x) for x in (1.0, 10.0, 20.0, -0.5))
    assert float(total_loss(kl, enc, dec, reg, 1e-3, 1e-3)) == pytest.approx(1 + 0.01 + 0.02 - 0.5)
    assert float(total_loss(kl, None, dec, None, 1e-3, 1e-3)) == pytest.approx(1.02)


def _batch(tokenizer, model):
    """Two examples collated as the stage does (labels padded with -100, decoder inputs
    shifted right from the labels)."""
    src = tokenizer(["the council approved a new budget", "storm closed bridge river city police"])
    tgt = tokenizer(text_target=["budget approved", "bridge closed by the storm"])["input_ids"]
    rows = [{"input_ids": i, "attention_mask": m, "labels": t}
            for i, m, t in zip(src["input_ids"], src["attention_mask"], tgt)]
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)(rows)


def test_every_term_contributes_a_gradient(tiny_model, tiny_tokenizer):
    """d loss = d KL + l_enc d L_enc + l_dec d L_dec + d R, and no term's gradient is zero:
    the distillation terms are in the loss (the authors' released code never added them)."""
    torch.manual_seed(0)
    teacher = tiny_model.eval().requires_grad_(False)
    student = keep_blocks(copy.deepcopy(teacher), range(6), (0, 2, 5)).train().requires_grad_(True)
    dims = EncoderDims.from_config(teacher.config)
    # heads at log_alpha 0, not the stage's 10: a head gate sampled at exactly 1 (clipped)
    # passes no gradient, and this test wants every gate group to receive one
    gate_module = EncoderGates(dims, head_init_log_alpha=0.0)
    model = GatedStudent(student, gate_module)
    lambdas = torch.nn.Parameter(torch.tensor([0.5, 0.7]))
    args = argparse.Namespace(kl_temperature=2.0, kl_direction="teacher_student",
                              prediction_loss="kl", distill_enc=1e-3, distill_dec=1e-3)
    obj = NashObjective(model, student, teacher, list(enumerate(range(6))),
                        [(0, 0), (1, 2), (2, 5)], args, lambdas)
    batch = _batch(tiny_tokenizer, teacher)
    terms = obj.terms(batch, target=0.3)

    params = {"encoder": [p for n, p in student.named_parameters() if n.startswith("encoder.block")],
              "decoder": [p for n, p in student.named_parameters() if n.startswith("decoder.block")],
              "gates": list(gate_module.parameters()), "lambdas": [lambdas]}
    flat = [p for group in params.values() for p in group]

    def grads(value):
        gs = torch.autograd.grad(value, flat, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(flat, gs)]

    def norm(gs, group):
        idx = [i for i, p in enumerate(flat) if any(p is q for q in params[group])]
        return sum(float(gs[i].norm()) for i in idx)

    per_term = {k: grads(terms[k]) for k in ("kl", "enc_mse", "dec_mse", "reg")}
    # where each term must reach
    assert norm(per_term["kl"], "encoder") > 0 and norm(per_term["kl"], "decoder") > 0
    assert norm(per_term["kl"], "gates") > 0
    assert norm(per_term["enc_mse"], "encoder") > 0 and norm(per_term["enc_mse"], "gates") > 0
    assert norm(per_term["dec_mse"], "decoder") > 0
    assert norm(per_term["reg"], "gates") > 0 and norm(per_term["reg"], "lambdas") > 0
    # dR/d(l1, l2) = (s - t, (s - t)^2)
    gap = float(terms["expected_sparsity"].detach()) - 0.3
    lam_grad = per_term["reg"][len(flat) - 1]
    assert torch.allclose(lam_grad, torch.tensor([gap, gap * gap]), atol=1e-6)
    # the total's gradient is exactly the weighted sum: each term is in the loss
    total = grads(terms["loss"])
    weights = {"kl": 1.0, "enc_mse": 1e-3, "dec_mse": 1e-3, "reg": 1.0}
    for i in range(len(flat)):
        expected = sum(w * per_term[k][i] for k, w in weights.items())
        assert torch.allclose(total[i], expected, atol=1e-6, rtol=1e-4)
    # and dropping any one weighted term changes the gradient
    for k, w in weights.items():
        assert sum(float((w * g).norm()) for g in per_term[k]) > 1e-8, k
    obj.remove_hooks()
    model.masks.remove()


def test_prediction_loss_ce_replaces_the_kl(tiny_model, tiny_tokenizer):
    """``prediction_loss: ce`` (what the released trainer's training_step optimises) puts the
    student's cross-entropy where the KL was; the hidden-state terms stay."""
    teacher = tiny_model.eval().requires_grad_(False)
    student = keep_blocks(copy.deepcopy(teacher), range(6), (0, 5)).eval()
    out = {}
    for pred in ("kl", "ce"):
        args = argparse.Namespace(kl_temperature=2.0, kl_direction="teacher_student",
                                  prediction_loss=pred, distill_enc=1e-3, distill_dec=1e-3)
        model = GatedStudent(student, None)
        obj = NashObjective(model, student, teacher, list(enumerate(range(6))),
                            [(0, 0), (1, 5)], args)
        with torch.no_grad():
            out[pred] = obj.terms(_batch(tiny_tokenizer, teacher), target=0.0)
        obj.remove_hooks()
        assert "reg" not in out[pred]
    for pred, terms in out.items():
        assert float(terms["distill"]) == pytest.approx(float(
            terms[pred] + 1e-3 * terms["enc_mse"] + 1e-3 * terms["dec_mse"]))
        assert float(terms["loss"]) == float(terms["distill"])
    assert float(out["kl"]["ce"]) == pytest.approx(float(out["ce"]["ce"]))
    assert float(out["kl"]["distill"]) != pytest.approx(float(out["ce"]["distill"]))
