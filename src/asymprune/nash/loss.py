"""The NASH objective (section 4.3): L = L_pred + l_enc L_h^enc + l_dec L_h^dec + R.

- L_pred: KL divergence between the teacher's and the student's next-token distributions,
  summed over the vocabulary and averaged over the target tokens that are not padding.
  Direction: the paper writes KLD(f || g) with f the student; the usual distillation loss
  (Hinton et al.; CoFi, and the KL the released NASH trainer defines) is
  KL(teacher || student) = sum_v p_t log(p_t / p_s). ``direction`` picks one; the stage's
  default is ``teacher_student``. With a temperature T the KL of the softened distributions
  is multiplied by T^2 (T = 1: plain KL; the released scripts use T = 2). ``ce`` is the
  alternative L_pred: the student's cross-entropy on the labels.
- L_h: sum over matched layer pairs of the MSE between hidden states (the residual stream
  each block outputs), averaged over non-padding tokens and d_model. Encoder: student layer
  l vs teacher layer l; decoder: student layer j vs the teacher layer it was copied from.
- R: ``gates.lagrangian``.
The total is the plain sum with the paper's weights; every term stays in the graph.

Every token average takes an optional ``tokens``: the number of tokens it is an average
over. The stage passes the count of the whole optimizer step (all micro-batches on all
devices), so that the micro-batch terms add up to the average over the effective batch,
whatever the split: 2 micro-batches of 30 and 10 target tokens give (sum_1 + sum_2) / 40, not
(sum_1 / 30 + sum_2 / 10) / 2. Left out, it is the batch's own count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from asymprune.settings import KL_DIRECTIONS  # defined once, with the setting


def _count(token_mask: torch.Tensor, tokens) -> torch.Tensor | float:
    n = token_mask.sum() if tokens is None else tokens
    if n == 0:
        raise ValueError("no target token to distil on (all labels are padding)")
    return n


def kl_distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               token_mask: torch.Tensor, temperature: float = 1.0,
               direction: str = "teacher_student", tokens=None) -> torch.Tensor:
    """sum over masked tokens of KL(p || q) between softmax(logits / T), times T^2, / tokens."""
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"KL direction {direction!r} is not one of {KL_DIRECTIONS}")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if direction == "teacher_student":
        per_token = (log_t.exp() * (log_t - log_s)).sum(-1)
    else:
        per_token = (log_s.exp() * (log_s - log_t)).sum(-1)
    mask = token_mask.to(per_token.dtype)
    return (per_token * mask).sum() / _count(token_mask, tokens) * temperature ** 2


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, tokens=None) -> torch.Tensor:
    """sum over labelled tokens (label != -100) of -log p(label), / tokens."""
    mask = labels != -100
    total = F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=-100,
                            reduction="sum")
    return total / _count(mask, tokens)


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               pairs: Sequence[tuple[int, int]], token_mask: torch.Tensor,
               tokens=None) -> torch.Tensor:
    """sum over (student layer, teacher layer) pairs of the masked MSE of their outputs
    (squared differences summed over masked tokens, / (tokens x d_model))."""
    if not pairs:
        raise ValueError("no layer pairs to match")
    mask = token_mask.unsqueeze(-1).float()
    denom = _count(token_mask, tokens) * student[pairs[0][0]].shape[-1]   # tokens x d_model
    total = 0
    for s, t in pairs:
        diff = (student[s].float() - teacher[t].float()) ** 2
        total = total + (diff * mask).sum() / denom
    return total


def total_loss(pred: torch.Tensor, enc_mse: torch.Tensor | None, dec_mse: torch.Tensor,
               reg: torch.Tensor | None, distill_enc: float, distill_dec: float) -> torch.Tensor:
    """L_pred + l_enc L_h^enc + l_dec L_h^dec + R (absent terms: encoder mode 'none' has no
    R; all encoder modes have the encoder hidden-state term)."""
    loss = pred + distill_dec * dec_mse
    if enc_mse is not None:
        loss = loss + distill_enc * enc_mse
    if reg is not None:
        loss = loss + reg
    return loss
