"""Gate parameters for a T5 encoder and the hooks that apply masks to it.

A head mask multiplies the head's slice of the input of the output projection ``o`` (the
concatenated per-head attention outputs, (batch, seq, heads * d_kv)): z_head * Att_h W_O^h,
NASH's MHA formula. An FFN mask multiplies the input of ``wo`` (GELU(x W_0) * (x W_1), or
ReLU(x W_i)): FFN(x) = act(...) diag(z_int) W_2. Forward pre-hooks leave the T5 modules
untouched, so the masked student is an ordinary T5 (same weights as the physically pruned one).
"""

from __future__ import annotations

import torch
from torch import nn

from asymprune.nash import gates
from asymprune.nash.params import EncoderDims


class EncoderGates(nn.Module):
    """log_alpha for every encoder head, (layers, heads), and every FFN unit, (layers, d_ff).

    Initialised as the released L0Module does: heads at log_alpha ~ N(10, 0.01^2) (keep
    probability sigmoid(10 + (2/3) ln 11) = 0.99999: every head starts on; the first clamp
    brings them to ln 100 = 4.605, keep 0.998) and FFN units at ~ N(log(1-p) - log(p), 0.01^2)
    (p = 0.5: log_alpha 0, keep 0.832).
    """

    def __init__(self, dims: EncoderDims, head_init_log_alpha: float = 10.0,
                 ffn_init_droprate: float = 0.5, init_std: float = 0.01,
                 temperature: float = gates.TEMPERATURE):
        super().__init__()
        self.dims = dims
        self.temperature = temperature
        self.head_log_alpha = nn.Parameter(torch.empty(dims.n_layers, dims.n_heads))
        self.ffn_log_alpha = nn.Parameter(torch.empty(dims.n_layers, dims.d_ff))
        with torch.no_grad():
            self.head_log_alpha.normal_(head_init_log_alpha, init_std)
            self.ffn_log_alpha.normal_(gates.init_log_alpha(ffn_init_droprate), init_std)

    @torch.no_grad()
    def constrain_(self, limit: float) -> None:
        """Clamp every log_alpha to [-limit, limit] in place (after each gate update)."""
        for p in (self.head_log_alpha, self.ffn_log_alpha):
            p.copy_(gates.clamp_log_alpha(p, limit))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training masks: one hard-concrete sample per unit (shared by the batch)."""
        return tuple(gates.sample_gates(la, gates.uniform_noise(la.shape, device=la.device),
                                        self.temperature)
                     for la in (self.head_log_alpha, self.ffn_log_alpha))

    def expected_sparsity(self) -> torch.Tensor:
        return gates.expected_sparsity(self.head_log_alpha, self.ffn_log_alpha, self.dims,
                                       self.temperature)

    @torch.no_grad()
    def deterministic(self, target: float, tolerance: float):
        """(kept head indices per layer, kept FFN unit indices per layer, info)."""
        d, n = self.dims, self.dims.n_layers
        groups = [self.head_log_alpha[i].float().cpu() for i in range(n)] + \
                 [self.ffn_log_alpha[i].float().cpu() for i in range(n)]
        sizes = [d.head_params] * n + [d.ffn_unit_params] * n
        masks, info = gates.deterministic_masks(groups, sizes, d.full_params(), target,
                                                tolerance, self.temperature)
        kept = [[j for j, keep in enumerate(m) if keep] for m in masks]
        return kept[:n], kept[n:], info


def masks_from_indices(kept_heads, kept_units, dims: EncoderDims, device=None):
    """Binary (layers, heads) and (layers, d_ff) masks from kept index lists."""
    head_z = torch.zeros(dims.n_layers, dims.n_heads, device=device)
    ffn_z = torch.zeros(dims.n_layers, dims.d_ff, device=device)
    for i, (h, u) in enumerate(zip(kept_heads, kept_units)):
        head_z[i, list(h)] = 1.0
        ffn_z[i, list(u)] = 1.0
    return head_z, ffn_z


class EncoderMasks:
    """Forward pre-hooks on every encoder layer's ``o`` and ``wo``; ``set`` the masks before a
    forward pass, ``clear`` to run unmasked, ``remove`` to detach the hooks."""

    def __init__(self, model, dims: EncoderDims):
        if len(model.encoder.block) != dims.n_layers:
            raise ValueError(f"{dims.n_layers} gated layers but the encoder has "
                             f"{len(model.encoder.block)} blocks")
        self.d_kv = dims.d_kv
        self.head_z: torch.Tensor | None = None
        self.ffn_z: torch.Tensor | None = None
        self._handles = []
        for i, block in enumerate(model.encoder.block):
            attn = block.layer[0].SelfAttention
            ff = block.layer[-1].DenseReluDense
            if attn.o.in_features != dims.n_heads * dims.d_kv or ff.wo.in_features != dims.d_ff:
                raise ValueError(f"encoder layer {i} is already width-pruned; gates need the "
                                 f"full {dims.n_heads} heads and {dims.d_ff} FFN units")
            self._handles.append(attn.o.register_forward_pre_hook(self._head_hook(i)))
            self._handles.append(ff.wo.register_forward_pre_hook(self._ffn_hook(i)))

    def set(self, head_z: torch.Tensor, ffn_z: torch.Tensor) -> None:
        self.head_z, self.ffn_z = head_z, ffn_z

    def clear(self) -> None:
        self.head_z = self.ffn_z = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _head_hook(self, layer: int):
        def hook(module, args):
            if self.head_z is None:
                return None
            x = args[0]
            # one gate per head, repeated over its d_kv output features: (heads * d_kv,)
            z = self.head_z[layer].repeat_interleave(self.d_kv).to(x.dtype)
            return (x * z,) + tuple(args[1:])
        return hook

    def _ffn_hook(self, layer: int):
        def hook(module, args):
            if self.ffn_z is None:
                return None
            x = args[0]
            return (x * self.ffn_z[layer].to(x.dtype),) + tuple(args[1:])
        return hook


class DecoderGates(nn.Module):
    """log_alpha for the kept decoder blocks' self-attention heads and cross-attention heads,
    (layers, heads) each, and FFN units, (layers, d_ff): the released L0Module's
    dec_self_head / dec_cross_head / dec_intermediate gates, initialised as the encoder's
    (heads at 10, FFN units at droprate ``ffn_init_droprate``). They are trained with the
    encoder's gates but count in no sparsity and remove nothing: during training they are a
    dropout-like noise, and at the end each unit's :func:`gates.soft_mask_value` is folded
    into the decoder's weights (``nash.prune.fold_decoder_gates``)."""

    def __init__(self, n_layers: int, n_heads: int, d_ff: int, head_init_log_alpha: float = 10.0,
                 ffn_init_droprate: float = 0.5, init_std: float = 0.01,
                 temperature: float = gates.TEMPERATURE):
        super().__init__()
        self.temperature = temperature
        self.self_log_alpha = nn.Parameter(torch.empty(n_layers, n_heads))
        self.cross_log_alpha = nn.Parameter(torch.empty(n_layers, n_heads))
        self.ffn_log_alpha = nn.Parameter(torch.empty(n_layers, d_ff))
        with torch.no_grad():
            self.self_log_alpha.normal_(head_init_log_alpha, init_std)
            self.cross_log_alpha.normal_(head_init_log_alpha, init_std)
            self.ffn_log_alpha.normal_(gates.init_log_alpha(ffn_init_droprate), init_std)

    def _all(self):
        return (self.self_log_alpha, self.cross_log_alpha, self.ffn_log_alpha)

    @torch.no_grad()
    def constrain_(self, limit: float) -> None:
        for p in self._all():
            p.copy_(gates.clamp_log_alpha(p, limit))

    def sample(self) -> tuple[torch.Tensor, ...]:
        """(self heads, cross heads, FFN units) hard-concrete samples, shared by the batch."""
        return tuple(gates.sample_gates(la, gates.uniform_noise(la.shape, device=la.device),
                                        self.temperature) for la in self._all())

    @torch.no_grad()
    def fold_factors(self) -> tuple[torch.Tensor, ...]:
        """The deterministic (self heads, cross heads, FFN units) values folded at the end."""
        return tuple(gates.soft_mask_value(la.float(), self.temperature) for la in self._all())


def make_gates(s, encoder_l0: bool, dims: EncoderDims, student_config, device
               ) -> tuple[EncoderGates | None, DecoderGates | None]:
    """The NASH stage's gates for settings ``s`` (``settings.NashTrain``): the encoder's where
    it is L0-pruned (``encoder_l0``), the kept decoder blocks' with ``s.decoder_gates``; None
    where there are none. The stage and its calibration (``asymprune.calibrate``) build them
    here, so both train the same gates."""
    enc = (EncoderGates(dims, s.head_gate_init_log_alpha, s.ffn_gate_init_droprate,
                        temperature=s.gate_temperature).to(device)
           if encoder_l0 else None)
    dec = (DecoderGates(student_config.num_decoder_layers, student_config.num_heads,
                        student_config.d_ff, s.head_gate_init_log_alpha,
                        s.ffn_gate_init_droprate, temperature=s.gate_temperature).to(device)
           if s.decoder_gates else None)
    return enc, dec


def _scale_input(z_of, layer: int, repeat: int):
    """A forward pre-hook multiplying a projection's input by unit masks ``z_of()[layer]``,
    each repeated over ``repeat`` features (a head's d_kv; 1 for FFN units)."""
    def hook(module, args):
        z = z_of()
        if z is None:
            return None
        x = args[0]
        zl = z[layer].repeat_interleave(repeat) if repeat > 1 else z[layer]
        return (x * zl.to(x.dtype),) + tuple(args[1:])
    return hook


class DecoderMasks:
    """Forward pre-hooks on every decoder block's self-attention ``o``, cross-attention ``o``
    and FFN ``wo``: the decoder's side of :class:`EncoderMasks` (``set`` / ``clear`` /
    ``remove``)."""

    def __init__(self, model):
        self.z: tuple[torch.Tensor, ...] | None = None
        self._handles = []
        for i, block in enumerate(model.decoder.block):
            self_attn, cross = block.layer[0].SelfAttention, block.layer[1].EncDecAttention
            d_kv = self_attn.key_value_proj_dim
            for k, module, repeat in ((0, self_attn.o, d_kv), (1, cross.o, d_kv),
                                      (2, block.layer[-1].DenseReluDense.wo, 1)):
                self._handles.append(module.register_forward_pre_hook(
                    _scale_input(lambda k=k: None if self.z is None else self.z[k], i, repeat)))

    def set(self, self_z: torch.Tensor, cross_z: torch.Tensor, ffn_z: torch.Tensor) -> None:
        self.z = (self_z, cross_z, ffn_z)

    def clear(self) -> None:
        self.z = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
