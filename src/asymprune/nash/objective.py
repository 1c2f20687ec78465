"""What the NASH stage trains and the loss it minimises, on live models: the student and its
gates as one module (:class:`GatedStudent`), the hooks that collect each block's output
(:class:`BlockOutputs`), the last distilled pair taken after the final norm
(:func:`final_normed`), the loss of one micro-batch term by term (:class:`NashObjective`) and
the frozen shared embedding (:func:`freeze_embeddings`). The loss functions themselves are
``nash.loss``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from asymprune.nash import gates
from asymprune.nash.loss import cross_entropy, hidden_mse, kl_distill, total_loss
from asymprune.nash.masking import DecoderGates, DecoderMasks, EncoderGates, EncoderMasks


def freeze_embeddings(model) -> int:
    """Freeze the shared token embedding (the encoder's and decoder's ``embed_tokens`` are the
    same tensor; so is ``lm_head`` when tied), as the released code leaves ``shared`` and
    ``embed_tokens`` out of its optimizer. Returns the number of frozen parameters."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


class BlockOutputs:
    """Collects each block's output hidden states (the residual stream) in block order."""

    def __init__(self, stack):
        self.outputs: list[torch.Tensor] = []
        self._handles = [b.register_forward_hook(self._hook) for b in stack.block]

    def _hook(self, module, args, output):
        self.outputs.append(output[0])

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class GatedStudent(nn.Module):
    """The student and its gates (encoder, and the decoder's with ``decoder_gates``) as one
    module, so that DDP all-reduces the weights' and the gates' gradients together.
    ``forward`` draws one hard-concrete mask per unit (shared by the batch, as the released
    code) and returns (logits, expected sparsity of the encoder); the gate math runs in fp32
    whatever the autocast (a bf16 sigmoid would round s_hat to ~0.4 %)."""

    def __init__(self, student, gate_module: EncoderGates | None,
                 dec_gate_module: DecoderGates | None = None):
        super().__init__()
        self.student, self.gates, self.dec_gates = student, gate_module, dec_gate_module
        self.masks = EncoderMasks(student, gate_module.dims) if gate_module is not None else None
        self.dec_masks = DecoderMasks(student) if dec_gate_module is not None else None

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        s_hat = None
        with torch.autocast(input_ids.device.type, enabled=False):
            if self.gates is not None:
                self.masks.set(*self.gates.sample())
                s_hat = self.gates.expected_sparsity()
            if self.dec_gates is not None:
                self.dec_masks.set(*self.dec_gates.sample())
        logits = self.student(input_ids=input_ids, attention_mask=attention_mask,
                              decoder_input_ids=decoder_input_ids).logits
        return logits, s_hat


def final_normed(s_stack, t_stack, s_h: list, t_h: list, pairs) -> tuple[list, list]:
    """The block outputs to distil, with the last pair taken after each stack's
    ``final_layer_norm`` when it pairs the student's last block with the teacher's last block
    (Hugging Face's ``hidden_states[-1]``, what the released code distils; without the
    dropout that follows the norm). Measured on the demo (``docs/nash.md``,
    ``bench/nash_final_norm.py``): before the norm the last decoder pair alone was 91 % of the
    decoder hidden-state loss at the start of the NASH stage; after it, 25.5 %. Other pairs (a
    ``low`` selection's last block is not the teacher's last) stay block outputs."""
    (s_last, t_last) = pairs[-1]
    if s_last != len(s_h) - 1 or t_last != len(t_h) - 1:
        return s_h, t_h
    with torch.no_grad():
        t_norm = t_stack.final_layer_norm(t_h[-1])
    return s_h[:-1] + [s_stack.final_layer_norm(s_h[-1])], t_h[:-1] + [t_norm]


class NashObjective:
    """The loss of one micro-batch, term by term (section 4.3).

    Hooks on every block of both models collect the hidden states. ``terms`` returns
    {kl, ce, enc_mse, dec_mse, distill, loss[, reg, expected_sparsity]}: ``distill`` =
    L_pred + l_enc L_h^enc + l_dec L_h^dec (L_pred: ``kl`` or ``ce`` by ``prediction_loss``),
    ``loss`` = distill + R. Token averages are over ``target_tokens`` / ``source_tokens``
    (the whole optimizer step's counts, ``nash.loss``), else over this batch's.
    ``forward`` is the (possibly DDP-wrapped) :class:`GatedStudent`.
    """

    def __init__(self, forward, student, teacher, enc_pairs, dec_pairs, settings, lambdas=None):
        self.forward, self.student, self.teacher = forward, student, teacher
        self.enc_pairs, self.dec_pairs = list(enc_pairs), list(dec_pairs)
        self.settings, self.lambdas = settings, lambdas
        self.t_enc, self.t_dec = BlockOutputs(teacher.encoder), BlockOutputs(teacher.decoder)
        self.s_enc, self.s_dec = BlockOutputs(student.encoder), BlockOutputs(student.decoder)

    def terms(self, batch, target: float, target_tokens=None, source_tokens=None,
              autocast=contextlib.nullcontext) -> dict:
        s = self.settings
        labels = batch["labels"]
        tok = labels != -100
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
        with torch.no_grad(), autocast():
            t_logits = self.teacher(**inputs).logits
        t_h_enc, t_h_dec = self.t_enc.take(), self.t_dec.take()
        with autocast():
            logits, s_hat = self.forward(**inputs)
        s_h_enc, t_h_enc = final_normed(self.student.encoder, self.teacher.encoder,
                                        self.s_enc.take(), t_h_enc, self.enc_pairs)
        s_h_dec, t_h_dec = final_normed(self.student.decoder, self.teacher.decoder,
                                        self.s_dec.take(), t_h_dec, self.dec_pairs)
        terms = {
            "kl": kl_distill(logits, t_logits, tok, s.kl_temperature, s.kl_direction,
                             tokens=target_tokens),
            "ce": cross_entropy(logits, labels, tokens=target_tokens),
            "enc_mse": hidden_mse(s_h_enc, t_h_enc, self.enc_pairs,
                                  batch["attention_mask"].bool(), tokens=source_tokens),
            "dec_mse": hidden_mse(s_h_dec, t_h_dec, self.dec_pairs, tok,
                                  tokens=target_tokens),
        }
        terms["distill"] = total_loss(terms[s.prediction_loss], terms["enc_mse"],
                                      terms["dec_mse"], None, s.distill_enc, s.distill_dec)
        terms["loss"] = terms["distill"]
        if s_hat is not None:
            reg = gates.lagrangian(s_hat, target, self.lambdas[0], self.lambdas[1])
            terms.update(reg=reg, expected_sparsity=s_hat, loss=terms["distill"] + reg)
        return terms

    def remove_hooks(self) -> None:
        for h in (self.t_enc, self.t_dec, self.s_enc, self.s_dec):
            h.remove()
