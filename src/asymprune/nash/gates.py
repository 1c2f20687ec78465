"""Hard-concrete gates (Louizos et al., 2018) and the sparsity controller: tensor math only.

No modules here (the gate parameters live in ``masking.EncoderGates``). Each prunable unit j
(an encoder head or FFN unit) has a learnable ``log_alpha_j``. With u ~ U(0, 1):

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)      concrete sample in (0, 1)
    z = min(1, max(0, s * (r - l) + l))                        stretched to (l, r), clipped

l = -0.1, r = 1.1, beta = 2/3 are Louizos et al.'s constants and the released NASH / CoFi
code's (NASH appendix B writes the beta = 1 case without naming a temperature; beta is the
setting ``gate_temperature``). The stretch puts mass on exactly 0 and exactly 1. The
probability that a gate is non-zero (its unit is kept) is

    P(z > 0) = 1 - Q(s_bar <= 0) = sigmoid(log_alpha - beta * log(-l / r))

e.g. log_alpha = 0: sigmoid((2/3) * log 11) = sigmoid(1.5986) = 0.8318.

Expected sparsity (NASH eq. for s_hat, counted over the encoder's prunable parameters):
s_hat = 1 - E[kept params] / full params, with E[kept heads in layer i] = sum_j P(z_ij > 0).
Lagrangian (Wang et al., 2020): R = lambda_1 (s_hat - t) + lambda_2 (s_hat - t)^2, minimised
over gates and weights, maximised over the lambdas.

As in the released code (CoFi's ``L0Module.constrain_parameters``), log_alpha is clamped to
[-ln 100, ln 100] = [-4.605, 4.605] after every update, so no gate saturates beyond recall:
keep probabilities stay within [0.047, 0.998] and a gradient can still move every gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity

LEFT = -0.1          # l (Louizos' gamma)
RIGHT = 1.1          # r (Louizos' zeta)
TEMPERATURE = 2 / 3  # beta
EPS = 1e-6           # u is drawn from [EPS, 1 - EPS]: log u and log(1 - u) stay finite
# The released code's deterministic gate value (CoFi's L0Module, "magical number" 0.8 after
# Wang et al. 2020): a kept unit's final soft mask is sigmoid(0.8 log_alpha / beta).
SOFT_MASK_SCALE = 0.8


def init_log_alpha(droprate: float) -> float:
    """Louizos et al.'s initial log_alpha, log(1 - p) - log(p): the un-stretched concrete
    sample s falls below 1/2 with probability p. droprate 0.5 -> 0.0 (keep prob 0.8318),
    0.1 -> log 9 = 2.197 (keep prob sigmoid(2.197 + 1.599) = 0.978)."""
    if not 0 < droprate < 1:
        raise ValueError(f"gate init droprate must be in (0, 1), got {droprate}")
    return math.log(1 - droprate) - math.log(droprate)


def clamp_log_alpha(log_alpha: torch.Tensor, limit: float) -> torch.Tensor:
    """log_alpha clamped to [-limit, limit] (out of place; ``EncoderGates.constrain_`` applies
    it in place after each gate update). E.g. limit ln 100: 10.0 -> 4.605, -7 -> -4.605."""
    if not limit > 0:
        raise ValueError(f"log_alpha limit must be > 0, got {limit}")
    return log_alpha.clamp(-limit, limit)


def uniform_noise(shape, *, generator: torch.Generator | None = None, device=None,
                  dtype=torch.float32) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return u * (1 - 2 * EPS) + EPS


def sample_gates(log_alpha: torch.Tensor, u: torch.Tensor,
                 temperature: float = TEMPERATURE) -> torch.Tensor:
    """A reparameterised hard-concrete sample z in [0, 1] for noise u (differentiable in log_alpha)."""
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / temperature)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def keep_probability(log_alpha: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """P(z > 0) per gate: sigmoid(log_alpha - beta * log(-l / r))."""
    return torch.sigmoid(log_alpha - temperature * math.log(-LEFT / RIGHT))


def soft_mask_value(log_alpha: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The deterministic value the released code gives a kept unit, sigmoid(0.8 log_alpha /
    beta), folded into the weights at the end. E.g. a gate at the clamp ln 100 with beta 2/3:
    sigmoid(0.8 * 4.605 * 1.5) = sigmoid(5.526) = 0.99603; log_alpha 0: 0.5."""
    return torch.sigmoid(SOFT_MASK_SCALE * log_alpha / temperature)


def expected_kept(head_log_alpha: torch.Tensor, ffn_log_alpha: torch.Tensor,
                  dims: EncoderDims, temperature: float = TEMPERATURE) -> torch.Tensor:
    """E[kept prunable parameters]: per-layer expected counts through the one param count."""
    heads = keep_probability(head_log_alpha, temperature).sum(dim=-1)    # (layers,)
    units = keep_probability(ffn_log_alpha, temperature).sum(dim=-1)     # (layers,)
    return encoder_prunable_params(list(heads), list(units), dims)


def expected_sparsity(head_log_alpha: torch.Tensor, ffn_log_alpha: torch.Tensor,
                      dims: EncoderDims, temperature: float = TEMPERATURE) -> torch.Tensor:
    return sparsity(expected_kept(head_log_alpha, ffn_log_alpha, dims, temperature),
                    dims.full_params())


def lagrangian(s_hat: torch.Tensor, target: float, lambda_1: torch.Tensor,
               lambda_2: torch.Tensor) -> torch.Tensor:
    """R = lambda_1 (s_hat - t) + lambda_2 (s_hat - t)^2."""
    gap = s_hat - target
    return lambda_1 * gap + lambda_2 * gap * gap


def target_at(step: int, target: float, warmup_steps: int) -> float:
    """Linear warm-up of the target: 0 at step 0, ``target`` from ``warmup_steps`` on.
    E.g. target 0.3, warm-up 80 steps: step 20 -> 0.075."""
    if warmup_steps <= 0:
        return target
    return target * min(1.0, step / warmup_steps)


def expected_count(log_alpha: torch.Tensor, temperature: float = TEMPERATURE) -> int:
    """Units a group keeps deterministically: its expected number of non-zero gates,
    sum_j P(z_j > 0), rounded half up (3.5 -> 4, 3.49 -> 3)."""
    return math.floor(float(keep_probability(log_alpha.double(), temperature).sum()) + 0.5)


def deterministic_masks(groups: Sequence[torch.Tensor], unit_params: Sequence[int],
                        full_params: int, target: float, tolerance: float,
                        temperature: float = TEMPERATURE) -> tuple[list[list[bool]], dict]:
    """Binary keep masks for gate groups (one group = one layer's heads, or its FFN units).

    1. Each group keeps its :func:`expected_count` highest-scoring units (score = log_alpha;
       ties go to the lower index).
    2. Per-group rounding can leave the reached sparsity off the target by up to half a unit
       per group (tiny model: a head is 1024 of 52,224 params = 2 points, six layers). When the
       sparsity is outside ``target +- tolerance``, units are moved one at a time: if
       under-pruned, the lowest-scoring kept unit (over all groups) whose removal does not
       overshoot ``target + tolerance`` is removed; if over-pruned, the highest-scoring pruned
       unit whose return does not undershoot ``target - tolerance`` is restored. Small FFN units
       make the band reachable; if no unit fits, it is an error, not a silent miss.

    Returns (masks, info) with info = {"sparsity_rounded", "sparsity", "units_removed",
    "units_restored"}.
    """
    if len(groups) != len(unit_params):
        raise ValueError("one unit size per gate group")
    masks: list[list[bool]] = []
    kept = 0
    for g, size in zip(groups, unit_params):
        k = expected_count(g, temperature)
        order = sorted(range(len(g)), key=lambda j: (-float(g[j]), j))
        keep = set(order[:k])
        masks.append([j in keep for j in range(len(g))])
        kept += k * size
    rounded = sparsity(kept, full_params)
    removed = restored = 0
    units = [(float(g[j]), gi, j) for gi, g in enumerate(groups) for j in range(len(g))]
    while sparsity(kept, full_params) < target - tolerance:        # under-pruned
        for score, gi, j in sorted(units, key=lambda t: (t[0], -t[1], -t[2])):
            if masks[gi][j] and sparsity(kept - unit_params[gi], full_params) <= target + tolerance:
                masks[gi][j] = False
                kept -= unit_params[gi]
                removed += 1
                break
        else:
            raise ValueError(f"cannot reach sparsity {target} +- {tolerance}: no kept unit is "
                             f"small enough (at {sparsity(kept, full_params):.4f})")
    while sparsity(kept, full_params) > target + tolerance:        # over-pruned
        for score, gi, j in sorted(units, key=lambda t: (-t[0], t[1], t[2])):
            if not masks[gi][j] and sparsity(kept + unit_params[gi], full_params) >= target - tolerance:
                masks[gi][j] = True
                kept += unit_params[gi]
                restored += 1
                break
        else:
            raise ValueError(f"cannot reach sparsity {target} +- {tolerance}: no pruned unit is "
                             f"small enough (at {sparsity(kept, full_params):.4f})")
    return masks, {"sparsity_rounded": rounded, "sparsity": sparsity(kept, full_params),
                   "units_removed": removed, "units_restored": restored}
