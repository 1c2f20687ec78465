"""The NASH objective: hand values of each term, and every term reaches the gradient."""

from __future__ import annotations

import argparse
import copy
import math

import pytest
import torch

from asymprune.nash.loss import hidden_mse, kl_distill, total_loss
from asymprune.nash.masking import EncoderGates, EncoderMasks
from asymprune.nash.params import EncoderDims
from asymprune.nash.train import NashObjective, collate
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


def test_every_term_contributes_a_gradient(tiny_model, tiny_tokenizer):
    """d loss = d KL + l_enc d L_enc + l_dec d L_dec + d R, and no term's gradient is zero:
    the distillation terms are in the loss (the authors' released code never added them)."""
    torch.manual_seed(0)
    teacher = tiny_model.eval().requires_grad_(False)
    student = keep_blocks(copy.deepcopy(teacher), range(6), (0, 2, 5)).train().requires_grad_(True)
    dims = EncoderDims.from_config(teacher.config)
    gate_module = EncoderGates(dims)
    masks = EncoderMasks(student, dims)
    lambdas = torch.nn.Parameter(torch.tensor([0.5, 0.7]))
    args = argparse.Namespace(kl_temperature=1.0, kl_direction="teacher_student",
                              distill_enc=1e-3, distill_dec=1e-3)
    obj = NashObjective(student, teacher, list(enumerate(range(6))), [(0, 0), (1, 2), (2, 5)],
                        args, gate_module=gate_module, masks=masks, lambdas=lambdas)
    texts = ["the council approved a new budget", "storm closed bridge river city police"]
    src = tiny_tokenizer(texts)["input_ids"]
    tgt = tiny_tokenizer(["budget approved", "bridge closed"])["input_ids"]
    batch = collate(list(zip(src, tgt)), tiny_tokenizer.pad_token_id, "cpu")
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
    masks.remove()
