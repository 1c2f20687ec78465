"""NASH pure math against hand-computed values: variant ids, parameter count, gates, masks."""

from __future__ import annotations

import math

import pytest
import torch

from asymprune.nash import gates
from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity
from asymprune.variants import NashVariant, format_nash, is_valid, parse_nash

BETA = 2 / 3
# d_model 32, d_kv 8, gated-GELU: a head is 4 * 32 * 8 = 1024 params, an FFN unit 3 * 32 = 96;
# a layer of 4 heads and 48 units is 4096 + 4608 = 8704, six layers 52,224.
TINY = EncoderDims(n_layers=6, n_heads=4, d_ff=48, d_model=32, d_kv=8, gated=True)


def logit_for_keep(p: float) -> float:
    """log_alpha whose keep probability is p: keep = sigmoid(log_alpha + beta ln 11)
    (log(-l/r) = log(0.1/1.1) = -ln 11), so log_alpha = logit(p) - beta ln 11."""
    return math.log(p / (1 - p)) - BETA * math.log(11)


# ---- variant ids

@pytest.mark.parametrize("vid,expected", [
    ("nash-d3-uniform-l0s30", NashVariant(3, "uniform", "l0", 0.30)),
    ("nash-d2-low-l0s60", NashVariant(2, "low", "l0", 0.60)),
    ("nash-d4-high-none", NashVariant(4, "high", "none", 0.0)),
    ("nash-d12-uniform-layerss30", NashVariant(12, "uniform", "layers", 0.30)),
])
def test_variant_ids_round_trip(vid, expected):
    v = parse_nash(vid)
    assert v == expected
    assert v.id == vid
    assert format_nash(v.decoder_layers, v.layer_selection, v.encoder_mode,
                             v.target_sparsity) == vid


@pytest.mark.parametrize("bad", ["nash-d0-uniform-l0s30", "nash-d3-middle-l0s30",
                                 "nash-d3-uniform-l0s0", "nash-d3-uniform-l0s100",
                                 "nash-d3-uniform-l0", "nash-d3-uniform-nones30",
                                 "e3d6", "nash-d3-uniform-L0s30", "nash-d3-uniform-l0s30x"])
def test_malformed_variant_ids_are_rejected(bad):
    assert not is_valid(bad) or bad == "e3d6"  # a depth variant, not a NASH one
    with pytest.raises(ValueError, match="nash-d|e\\{E\\}d\\{D\\}"):
        parse_nash(bad)


def test_format_rejects_fractional_percent_and_target_without_mode():
    with pytest.raises(ValueError, match="whole percentage"):
        format_nash(3, "uniform", "l0", 0.305)
    with pytest.raises(ValueError, match="prunes nothing"):
        format_nash(3, "uniform", "none", 0.3)


# ---- the one parameter count

def test_unit_sizes_and_full_count():
    assert TINY.head_params == 1024 and TINY.ffn_unit_params == 96
    assert TINY.full_params() == 52_224
    relu = EncoderDims(6, 4, 48, 32, 8, gated=False)
    assert relu.ffn_unit_params == 64            # wi, wo: 2 * 32
    assert relu.full_params() == 6 * (4096 + 48 * 64)
    # T5-base v1.1 head: 4 * 768 * 64
    assert EncoderDims(12, 12, 2048, 768, 64, True).head_params == 196_608


def test_prunable_params_and_sparsity_hand_values():
    assert encoder_prunable_params([3], [40], TINY) == 3 * 1024 + 40 * 96 == 6912
    assert encoder_prunable_params([0, 4], [48, 0], TINY) == 4608 + 4096
    # 30 % of 52,224 removed leaves 36,556.8
    assert sparsity(36_556.8, 52_224) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="per encoder layer"):
        encoder_prunable_params([1, 2], [3], TINY)
    with pytest.raises(ValueError, match="zero"):
        sparsity(0, 0)


def test_prunable_params_accepts_tensors_and_keeps_the_graph():
    heads = torch.tensor([1.5, 2.0], requires_grad=True)
    total = encoder_prunable_params(list(heads), [10.0, 0.0], TINY)
    assert float(total.detach()) == pytest.approx(3.5 * 1024 + 10 * 96)
    total.backward()
    assert torch.equal(heads.grad, torch.tensor([1024.0, 1024.0]))


# ---- hard-concrete gates

def test_keep_probability_hand_values():
    # log_alpha 0: sigmoid((2/3) ln 11) = sigmoid(1.5986) = 0.83182
    assert float(gates.keep_probability(torch.tensor(0.0))) == pytest.approx(0.8318222, abs=1e-6)
    assert float(gates.keep_probability(torch.tensor(-BETA * math.log(11)))) == pytest.approx(0.5)
    assert gates.init_log_alpha(0.5) == 0.0
    assert gates.init_log_alpha(0.1) == pytest.approx(math.log(9))


@pytest.mark.parametrize("u,log_alpha,z", [
    (0.5, 0.0, 0.5),                    # s = 0.5 -> 0.5 * 1.2 - 0.1 = 0.5
    (0.6, 0.0, 0.6770355),              # s = 1 / (1 + (2/3)^1.5) = 0.647530 -> 0.677035
    (0.9, 0.0, 1.0),                    # s = 27/28 -> 1.057, clipped to 1
    (0.1, 0.0, 0.0),                    # s = 1/28 -> -0.057, clipped to 0
    (0.5, 10.0, 1.0),                   # s = sigmoid(15) -> 1.1 -> 1
    (0.5, -10.0, 0.0),
])
def test_sample_hand_values(u, log_alpha, z):
    got = gates.sample_gates(torch.tensor(log_alpha), torch.tensor(u))
    assert float(got) == pytest.approx(z, abs=1e-6)


def test_sample_is_differentiable_and_noise_is_inside_the_open_interval():
    la = torch.zeros(5, requires_grad=True)
    z = gates.sample_gates(la, torch.full((5,), 0.6))
    z.sum().backward()
    # dz/dlog_alpha = 1.2 * s (1 - s) / beta at s = 0.647530: 1.2 * 0.228234 * 1.5 = 0.410821
    assert torch.allclose(la.grad, torch.full((5,), 0.410821), atol=1e-5)
    u = gates.uniform_noise((10_000,), generator=torch.Generator().manual_seed(0))
    assert float(u.min()) >= gates.EPS and float(u.max()) <= 1 - gates.EPS


def test_empirical_keep_rate_matches_keep_probability():
    la = torch.full((200_000,), 0.0)
    u = gates.uniform_noise(la.shape, generator=torch.Generator().manual_seed(0))
    rate = float((gates.sample_gates(la, u) > 0).float().mean())
    assert rate == pytest.approx(0.8318, abs=0.005)


def test_expected_sparsity_hand_value():
    dims = EncoderDims(n_layers=2, n_heads=4, d_ff=48, d_model=32, d_kv=8, gated=True)
    heads = torch.full((2, 4), -BETA * math.log(11))    # keep 0.5 each: 2 heads per layer
    ffn = torch.full((2, 48), 50.0)                     # keep ~1: all 48 units
    # kept 2 * (2 * 1024 + 48 * 96) = 13,312 of 17,408 -> 1 - 13312/17408 = 0.235294
    s = gates.expected_sparsity(heads, ffn, dims)
    assert float(s) == pytest.approx(4096 / 17408, abs=1e-6)


def test_lagrangian_and_target_schedule():
    r = gates.lagrangian(torch.tensor(0.25), 0.3, torch.tensor(2.0), torch.tensor(3.0))
    assert float(r) == pytest.approx(2 * -0.05 + 3 * 0.0025)           # -0.0925
    assert gates.target_at(0, 0.3, 80) == 0.0
    assert gates.target_at(20, 0.3, 80) == pytest.approx(0.075)
    assert gates.target_at(80, 0.3, 80) == gates.target_at(500, 0.3, 80) == 0.3
    assert gates.target_at(0, 0.3, 0) == 0.3


def test_multiplier_gradients_point_the_right_way():
    """Ascent on l1 lowers it while under-pruned (s < t), so that descent on R raises s."""
    l1, l2 = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    gates.lagrangian(torch.tensor(0.1), 0.3, l1, l2).backward()
    assert float(l1.grad) == pytest.approx(-0.2) and float(l2.grad) == pytest.approx(0.04)


# ---- deterministic masks

def test_expected_count_rounds_half_up():
    assert gates.expected_count(torch.tensor([logit_for_keep(0.5)] * 3)) == 2     # 1.5 -> 2
    assert gates.expected_count(torch.tensor([logit_for_keep(0.49)] * 3)) == 1    # 1.47 -> 1
    assert gates.expected_count(torch.tensor([50.0] * 4)) == 4


def _groups():
    # heads: keep probs 0.9, 0.8, 0.3, 0.2 (sum 2.2 -> 2 kept), 10 params each;
    # FFN: keep probs 0.70 .. 0.79 (sum 7.45 -> 7 kept: units 3..9), 1 param each.
    heads = torch.tensor([logit_for_keep(p) for p in (0.9, 0.8, 0.3, 0.2)])
    ffn = torch.tensor([logit_for_keep(0.70 + 0.01 * j) for j in range(10)])
    return [heads, ffn], [10, 1], 50      # full = 4 * 10 + 10 * 1


def test_deterministic_mask_keeps_expected_counts_when_in_tolerance():
    groups, sizes, full = _groups()
    masks, info = gates.deterministic_masks(groups, sizes, full, target=0.46, tolerance=0.005)
    assert masks[0] == [True, True, False, False]
    assert masks[1] == [False] * 3 + [True] * 7
    # kept 2 * 10 + 7 = 27 of 50 -> 0.46
    assert info == {"sparsity_rounded": pytest.approx(0.46), "sparsity": pytest.approx(0.46),
                    "units_removed": 0, "units_restored": 0}


def test_deterministic_mask_prunes_lowest_scores_when_under_pruned():
    groups, sizes, full = _groups()
    masks, info = gates.deterministic_masks(groups, sizes, full, target=0.5, tolerance=0.01)
    # 0.46 -> remove FFN 3 (p 0.73) -> 0.48 -> FFN 4 (0.74) -> 0.50
    assert masks[1] == [False] * 5 + [True] * 5 and masks[0] == [True, True, False, False]
    assert info["units_removed"] == 2 and info["sparsity"] == pytest.approx(0.5)


def test_deterministic_mask_restores_highest_scores_when_over_pruned():
    groups, sizes, full = _groups()
    masks, info = gates.deterministic_masks(groups, sizes, full, target=0.2, tolerance=0.01)
    # 0.46 -> FFN 2, 1, 0 back (0.40) -> head 2 (p 0.3, 10 params) back -> 0.20
    assert masks[0] == [True, True, True, False] and masks[1] == [True] * 10
    assert info["units_restored"] == 4 and info["sparsity"] == pytest.approx(0.2)


def test_deterministic_mask_fails_loudly_when_no_unit_fits():
    groups, sizes, full = _groups()
    # from 0.40 the next unit is a 10-param head: 0.20, outside 0.3 +- 0.01
    with pytest.raises(ValueError, match="cannot reach sparsity"):
        gates.deterministic_masks(groups, sizes, full, target=0.3, tolerance=0.01)


# ---- the released code's gate initialisation, clamp and schedules

LN100 = math.log(100)   # 4.605170: CoFi's / NASH's constrain_parameters bound


def test_gate_init_is_the_released_l0modules():
    from asymprune.nash.masking import EncoderGates

    torch.manual_seed(0)
    g = EncoderGates(TINY)                    # heads log_alpha 10, FFN droprate 0.5 -> 0
    assert g.head_log_alpha.shape == (6, 4) and g.ffn_log_alpha.shape == (6, 48)
    heads, ffn = g.head_log_alpha.detach(), g.ffn_log_alpha.detach()
    assert float(heads.mean()) == pytest.approx(10.0, abs=0.01)
    assert float(ffn.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(ffn.std()) == pytest.approx(0.01, rel=0.2)
    # keep probabilities: sigmoid(10 + (2/3) ln 11) = 0.999991, sigmoid((2/3) ln 11) = 0.831822
    assert float(gates.keep_probability(torch.tensor(10.0))) == pytest.approx(0.999991, abs=1e-6)
    # so the expected sparsity starts at the FFN units' share of the drop: the tiny encoder's
    # FFN units are 6 * 48 * 96 = 27,648 of 52,224 params; 27,648 * 0.168178 / 52,224 = 0.0890
    assert float(g.expected_sparsity().detach()) == pytest.approx(27_648 * (1 - 0.831822) / 52_224,
                                                         abs=2e-4)
    assert gates.init_log_alpha(0.5) == 0.0


def test_log_alpha_clamp_hand_values():
    la = torch.tensor([10.0, 4.0, -7.0, -4.6])
    assert torch.allclose(gates.clamp_log_alpha(la, LN100),
                          torch.tensor([LN100, 4.0, -LN100, -4.6]))
    # the bounds' keep probabilities: sigmoid(-4.605 + 1.599) = 0.0471, sigmoid(6.204) = 0.9980
    kp = gates.keep_probability(torch.tensor([-LN100, LN100]))
    assert torch.allclose(kp, torch.tensor([0.047130, 0.997982]), atol=1e-5)
    with pytest.raises(ValueError, match="> 0"):
        gates.clamp_log_alpha(la, 0.0)


def test_gates_constrain_in_place():
    from asymprune.nash.masking import EncoderGates

    g = EncoderGates(TINY)
    before = g.head_log_alpha
    g.constrain_(LN100)
    assert g.head_log_alpha is before                     # same Parameter (optimizer keeps it)
    assert float(g.head_log_alpha.detach().max()) == pytest.approx(LN100)
    assert float(g.ffn_log_alpha.detach().abs().max()) < 0.1       # untouched inside the bounds


def test_linear_learning_rate_schedule_values():
    """The weights' schedule (released code: get_linear_schedule_with_warmup, 0 warm-up):
    lr_k = lr (T - k) / T, e.g. lr 3e-5, T = 10: 3e-5, 2.4e-5 after 2 steps, 0 after 10."""
    from transformers import get_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=3e-5)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(3e-5) and lrs[2] == pytest.approx(2.4e-5)
    assert lrs[9] == pytest.approx(3e-6) and sched.get_last_lr()[0] == 0.0


def test_defaults_are_the_released_codes():
    from asymprune.settings import NashTrain

    d = NashTrain()
    assert (d.head_gate_init_log_alpha, d.ffn_gate_init_droprate) == (10.0, 0.5)
    assert d.gate_temperature == pytest.approx(2 / 3) and d.log_alpha_limit == pytest.approx(LN100)
    assert (d.lr_scheduler, d.warmup_steps, d.freeze_embeddings) == ("linear", 0, True)
    assert (d.kl_temperature, d.kl_direction) == (2.0, "teacher_student")
    assert d.sparsity_warmup_fraction == pytest.approx(1 / 3, abs=1e-4)   # 1 of 3 epochs
    # Table 8 where the scripts reuse NLU values: batch 4, lengths 512 / 128, lr 3e-5, 0.01
    assert (d.effective_batch_size, d.max_source_length, d.max_target_length) == (4, 512, 128)
    assert (d.learning_rate, d.reg_learning_rate, d.distill_enc) == (3e-5, 0.01, 0.001)


# ---- batches over devices and micro-batches

def test_batch_plan_keeps_the_effective_batch():
    from asymprune.batching import batch_plan

    assert batch_plan(8, 4, 1, 2, "k") == (4, 1)     # 4 x 1 x 2 = 8
    assert batch_plan(8, 4, 2, 2, "k") == (2, 2)     # an OOM retry: 2 x 2 x 2 = 8
    assert batch_plan(64, 8, 4, 1, "k") == (2, 32)   # 2 x 32 x 1 = 64
    with pytest.raises(ValueError, match="config key k.per_device_batch_size 4 is not divisible by "
                                         "--batch-divisor 3"):
        batch_plan(8, 4, 3, 1, "k")
    with pytest.raises(ValueError, match="config key k.effective_batch_size 8 is not a multiple of "
                                         "per-device batch 4 x 3 device"):
        batch_plan(8, 4, 1, 3, "k")


def test_every_example_of_a_step_is_read_once():
    """Devices x micro-batches tile the step's E stream positions with no overlap, for
    every split of the same effective batch."""
    from asymprune.nash.data import ExampleStream, micro_batch_positions

    stream = ExampleStream(20, seed=3)
    for world, per_device, accum in [(1, 8, 1), (1, 2, 4), (2, 4, 1), (2, 2, 2), (4, 1, 2)]:
        for step in (0, 1, 2):                       # step 2 straddles epochs 0 and 1
            pos = [p for r in range(world)
                   for m in micro_batch_positions(step, 8, per_device, accum, r) for p in m]
            assert sorted(pos) == list(range(8 * step, 8 * step + 8)), (world, per_device)
    # within an epoch a step's examples are distinct (step 2 may meet an example again: it
    # reads the end of epoch 0 and the start of epoch 1)
    assert len(set(stream.indices(range(0, 16)))) == 16
    # device 1 of 2, 2 x 2: step 0 -> positions [4, 5], [6, 7]
    assert micro_batch_positions(0, 8, 2, 2, 1) == [range(4, 6), range(6, 8)]
    # each epoch is a permutation of all examples, drawn from seed + epoch
    assert sorted(stream.indices(range(20, 40))) == list(range(20))
    assert stream.indices(range(20)) != stream.indices(range(20, 40))
    assert ExampleStream(20, seed=3).indices(range(45, 47)) == stream.indices(range(45, 47))


def test_total_steps():
    from asymprune.nash.data import total_steps

    assert total_steps(3.0, -1, 64, 4) == 48         # 3 x 64 / 4
    assert total_steps(1.3, -1, 64, 24) == 4         # ceil(83.2 / 24)
    assert total_steps(3.0, 7, 64, 4) == 7


def test_what_a_variant_implies_is_derived_once_into_frozen_settings():
    from asymprune import settings
    from asymprune.nash.job import StudentSpec, settings_for

    base = settings.NashTrain(reg_learning_rate=0.05, decoder_gates=True)
    s, spec = settings_for("nash-d3-uniform-l0s30-rel", base)
    assert spec == StudentSpec("l0", 0.3, "released")
    # the gates' learning rate defaults to the multipliers'; the rest is as given
    assert s.gate_learning_rate == 0.05 and s.decoder_gates and base.gate_learning_rate is None
    s, spec = settings_for("e6d2-ce", base)
    assert spec == StudentSpec("none", 0.0, "paper")
    assert (s.prediction_loss, s.distill_enc, s.distill_dec, s.decoder_gates) == (
        "ce", 0.0, 0.0, False)
    s, _ = settings_for("e6d2-kd", settings.NashTrain(gate_learning_rate=0.5))
    assert (s.prediction_loss, s.distill_enc, s.gate_learning_rate) == ("kl", 0.001, 0.5)
