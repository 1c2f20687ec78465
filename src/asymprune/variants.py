"""Variant ids: the one place that knows their rules (pure Python, no torch).

The config schema, the Snakemake wildcards, the stages and the report all ask this module: what
an id looks like (regex), what it means (parse), whether a model is deep enough for it (check),
which group of a table it belongs to, in which order tables list it, and which blocks it keeps.

Depth variants (Campos & Zhai), ``e{E}d{D}``: E/6 of the encoder and D/6 of the decoder kept,
E and D in 1..6; ``e6d6`` is the unpruned teacher. The paper's 16: e6d6; e6d5..e6d1 (decoder
pruned); e5d6..e1d6 (encoder pruned); e5d5..e1d1 (both, symmetric).

NASH variants (Ko et al.), ``nash-d{D}-{SELECTION}-{ENCODER}``::

    D         decoder blocks kept, an integer >= 1 (d3 = 3 blocks)
    SELECTION uniform | low | high            (asymprune.layers.NASH_STRATEGIES)
    ENCODER   none                            no encoder pruning
              l0s{P}                          L0 width pruning (heads + FFN units), target P %
              layerss{P}                      uniform encoder *layer* selection at ~P % sparsity
    P         an integer percentage 1..99 (s30 = 30 % = target sparsity 0.30)
    -rel      optional: trained and fine-tuned with the released code's protocol
              (``asymprune.settings.RELEASED_NASH_TRAIN`` / ``RELEASED_NASH_FINETUNE``)
              instead of the paper's; ``nash-d3-uniform-l0s30-rel`` and
              ``nash-d3-uniform-l0s30`` can run side by side in one DAG

Examples: ``nash-d3-uniform-l0s30`` (the paper's default), ``nash-d2-low-l0s30`` (Table 3
ablation), ``nash-d4-uniform-layerss30`` / ``nash-d4-uniform-none`` (Table 4 ablations).

Equal-budget baselines, ``e{E}d{D}-{OBJECTIVE}``: the depth variant e{E}d{D} (the same blocks,
chosen by ``layer_selection``; not e6d6) trained with NASH's budget instead of a re-fine-tune:
the NASH stage's steps and batches without gates, then NASH's final fine-tune.

    kd   NASH's distillation objective from the teacher (prediction loss + hidden-state MSE)
    ce   the labels' cross-entropy only (the same steps, no teacher)

E.g. ``e6d2-kd`` is a distilled e6d2 that saw as many examples as ``nash-d2-uniform-l0s30``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Union

from asymprune import layers
from asymprune.layers import NASH_STRATEGIES

TEACHER = "e6d6"

# Regex bodies (no anchors): Snakemake wildcard constraints take them as they are; the JSON
# schema and the parsers anchor them.
DEPTH_BODY = r"e[1-6]d[1-6]"
# the pruned depth variants (every e{E}d{D} but e6d6, which is the teacher itself)
PRUNED_DEPTH_BODY = r"e[1-5]d[1-6]|e6d[1-5]"
PROTOCOLS = ("paper", "released")
RELEASED_SUFFIX = "-rel"   # the id suffix of the released protocol
NASH_BODY = (r"nash-d[1-9][0-9]*-(?:" + "|".join(NASH_STRATEGIES)
             + r")-(?:none|l0s[1-9][0-9]?|layerss[1-9][0-9]?)(?:" + RELEASED_SUFFIX + ")?")
BASELINE_OBJECTIVES = ("kd", "ce")
BASELINE_BODY = r"(?:e[1-5]d[1-6]|e6d[1-5])-(?:" + "|".join(BASELINE_OBJECTIVES) + ")"
# what the NASH stage trains: NASH variants and the equal-budget baselines
NASH_STAGE_BODY = f"{NASH_BODY}|{BASELINE_BODY}"
ANY_BODY = f"{DEPTH_BODY}|{NASH_BODY}|{BASELINE_BODY}"

DEPTH_PATTERN = f"^{DEPTH_BODY}$"
NASH_PATTERN = f"^{NASH_BODY}$"

DEPTH_GRAMMAR = "e{E}d{D} with E, D in 1..6 (sixths of each stack kept)"
NASH_GRAMMAR = (f"nash-d{{D}}-{{{'|'.join(NASH_STRATEGIES)}}}-{{none|l0s{{P}}|layerss{{P}}}}"
                f"[{RELEASED_SUFFIX}] with D >= 1 decoder blocks, P in 1..99 percent, "
                f"{RELEASED_SUFFIX}: the released code's protocol")

BASELINE_GRAMMAR = (f"e{{E}}d{{D}}-{{{'|'.join(BASELINE_OBJECTIVES)}}} with E, D in 1..6, "
                    f"not e6d6")

_DEPTH_RE = re.compile(r"^e(?P<e>[1-6])d(?P<d>[1-6])$")
_BASELINE_RE = re.compile(r"^(?P<depth>e[1-6]d[1-6])-(?P<objective>[a-z]+)$")
_NASH_RE = re.compile(r"^nash-d(?P<d>[1-9][0-9]*)-(?P<sel>[a-z]+)-"
                      r"(?:(?P<none>none)|(?P<mode>l0|layers)s(?P<pct>[1-9][0-9]?))"
                      r"(?P<rel>" + RELEASED_SUFFIX + r")?$")

ENCODER_MODES = ("none", "l0", "layers")
# Table groups, in the order tables and legends list them (budget: equal-budget baselines)
GROUPS = ("baseline", "decoder", "encoder", "both", "other", "nash", "budget")

# The asymmetry paper's 16 variants, in its table order.
PAPER: tuple[str, ...] = (
    (TEACHER,)
    + tuple(f"e6d{d}" for d in range(5, 0, -1))
    + tuple(f"e{e}d6" for e in range(5, 0, -1))
    + tuple(f"e{k}d{k}" for k in range(5, 0, -1))
)


@dataclass(frozen=True)
class DepthVariant:
    enc_sixths: int
    dec_sixths: int

    @property
    def id(self) -> str:
        return f"e{self.enc_sixths}d{self.dec_sixths}"

    @property
    def is_teacher(self) -> bool:
        return (self.enc_sixths, self.dec_sixths) == (6, 6)

    def blocks(self, n_enc: int, n_dec: int,
               strategy: str = "auto") -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(encoder blocks, decoder blocks) this variant keeps of an n_enc + n_dec teacher."""
        return (layers.select_sixths(n_enc, self.enc_sixths, strategy),
                layers.select_sixths(n_dec, self.dec_sixths, strategy))

    def check_depth(self, n_enc: int, n_dec: int) -> None:
        # floor(n * s / 6), at least one block: every stack of >= 1 block has every sixth
        layers.sixths_count(n_enc, self.enc_sixths)
        layers.sixths_count(n_dec, self.dec_sixths)


@dataclass(frozen=True)
class NashVariant:
    decoder_layers: int
    layer_selection: str
    encoder_mode: str            # none | l0 | layers
    target_sparsity: float       # fraction; 0.0 for encoder_mode "none"
    protocol: str = "paper"      # paper | released (the -rel suffix)

    @property
    def id(self) -> str:
        return format_nash(self.decoder_layers, self.layer_selection, self.encoder_mode,
                           self.target_sparsity, self.protocol)

    def blocks(self, n_enc: int, n_dec: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(encoder blocks, decoder blocks) the student keeps of an n_enc + n_dec teacher."""
        self.check_depth(n_enc, n_dec)
        dec = layers.select_k(n_dec, self.decoder_layers, self.layer_selection)
        if self.encoder_mode != "layers":
            return tuple(range(n_enc)), dec
        return layers.uniform(n_enc, self._encoder_blocks_kept(n_enc)), dec

    def _encoder_blocks_kept(self, n_enc: int) -> int:
        # A whole encoder layer is 1/L of the prunable parameters, so keep the count nearest to
        # (1 - t) L, rounded half up: L = 6, t = 0.3 -> 4.2 -> 4 blocks (33.3 % reached);
        # L = 12, t = 0.25 -> 9 blocks (25 %).
        return math.floor((1 - self.target_sparsity) * n_enc + 0.5)

    def check_depth(self, n_enc: int, n_dec: int) -> None:
        if self.decoder_layers > n_dec:
            raise ValueError(f"{self.id} keeps {self.decoder_layers} decoder blocks but the "
                             f"model has only {n_dec}")
        if self.encoder_mode == "layers":
            k = self._encoder_blocks_kept(n_enc)
            if not 1 <= k < n_enc:
                raise ValueError(f"{self.id}: {self.target_sparsity:.0%} of {n_enc} encoder "
                                 f"blocks keeps {k}; it must keep between 1 and {n_enc - 1}")


@dataclass(frozen=True)
class BaselineVariant:
    """A depth variant trained with NASH's budget (see the module docstring)."""

    depth: DepthVariant
    objective: str               # kd | ce

    @property
    def id(self) -> str:
        return f"{self.depth.id}-{self.objective}"

    def blocks(self, n_enc: int, n_dec: int,
               strategy: str = "auto") -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.depth.blocks(n_enc, n_dec, strategy)

    def check_depth(self, n_enc: int, n_dec: int) -> None:
        self.depth.check_depth(n_enc, n_dec)


Variant = Union[DepthVariant, NashVariant, BaselineVariant]


def parse_depth(variant: str) -> DepthVariant:
    """``'e3d6'`` -> ``DepthVariant(3, 6)``; anything else is a ValueError naming the grammar."""
    m = _DEPTH_RE.match(variant) if isinstance(variant, str) else None
    if not m:
        raise ValueError(f"variant {variant!r} is not of the form {DEPTH_GRAMMAR}")
    return DepthVariant(int(m.group("e")), int(m.group("d")))


def parse_nash(variant: str) -> NashVariant:
    """``'nash-d3-uniform-l0s30'`` -> ``NashVariant(3, 'uniform', 'l0', 0.3)``."""
    m = _NASH_RE.match(variant) if isinstance(variant, str) else None
    if not m or m.group("sel") not in NASH_STRATEGIES:
        raise ValueError(f"NASH variant {variant!r} is not of the form {NASH_GRAMMAR}")
    protocol = "released" if m.group("rel") else "paper"
    if m.group("none"):
        return NashVariant(int(m.group("d")), m.group("sel"), "none", 0.0, protocol)
    return NashVariant(int(m.group("d")), m.group("sel"), m.group("mode"),
                       int(m.group("pct")) / 100, protocol)


def parse_baseline(variant: str) -> BaselineVariant:
    """``'e6d2-kd'`` -> ``BaselineVariant(DepthVariant(6, 2), 'kd')``."""
    m = _BASELINE_RE.match(variant) if isinstance(variant, str) else None
    if not m or m.group("objective") not in BASELINE_OBJECTIVES:
        raise ValueError(f"baseline variant {variant!r} is not of the form {BASELINE_GRAMMAR}")
    depth = parse_depth(m.group("depth"))
    if depth.is_teacher:
        raise ValueError(f"baseline variant {variant!r}: e6d6 is the teacher itself, there is "
                         f"nothing to train at NASH's budget ({BASELINE_GRAMMAR})")
    return BaselineVariant(depth, m.group("objective"))


def parse_nash_stage(variant: str) -> NashVariant | BaselineVariant:
    """What the NASH stage trains: a NASH variant or an equal-budget baseline."""
    if isinstance(variant, str) and variant.startswith("nash-"):
        return parse_nash(variant)
    try:
        return parse_baseline(variant)
    except ValueError:
        raise ValueError(f"variant {variant!r} is neither {NASH_GRAMMAR} nor "
                         f"{BASELINE_GRAMMAR}") from None


def parse(variant: str) -> Variant:
    """Any kind of id."""
    if isinstance(variant, str) and variant.startswith("nash-"):
        return parse_nash(variant)
    if isinstance(variant, str) and "-" in variant:
        return parse_baseline(variant)
    try:
        return parse_depth(variant)
    except ValueError:
        raise ValueError(f"variant {variant!r} is neither {DEPTH_GRAMMAR} nor {NASH_GRAMMAR} "
                         f"nor {BASELINE_GRAMMAR}") from None


def is_valid(variant: str) -> bool:
    try:
        parse(variant)
    except ValueError:
        return False
    return True


def format_nash(decoder_layers: int, layer_selection: str, encoder_mode: str,
                target_sparsity: float = 0.0, protocol: str = "paper") -> str:
    """Inverse of :func:`parse_nash`; the sparsity must be a whole percentage."""
    if not isinstance(decoder_layers, int) or decoder_layers < 1:
        raise ValueError(f"decoder_layers must be an int >= 1, got {decoder_layers!r}")
    if layer_selection not in NASH_STRATEGIES:
        raise ValueError(f"layer selection {layer_selection!r} is not one of {NASH_STRATEGIES}")
    if encoder_mode not in ENCODER_MODES:
        raise ValueError(f"encoder mode {encoder_mode!r} is not one of {ENCODER_MODES}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
    head = f"nash-d{decoder_layers}-{layer_selection}-"
    tail = RELEASED_SUFFIX if protocol == "released" else ""
    if encoder_mode == "none":
        if target_sparsity:
            raise ValueError(f"encoder mode 'none' prunes nothing; got target {target_sparsity}")
        return head + "none" + tail
    pct = round(target_sparsity * 100)
    if not 1 <= pct <= 99 or abs(pct - target_sparsity * 100) > 1e-6:
        raise ValueError(f"target sparsity {target_sparsity} is not a whole percentage in 1..99 % "
                         f"(variant ids name it as s{{P}})")
    return f"{head}{encoder_mode}s{pct}{tail}"


def protocol(variant: str) -> str:
    """The NASH protocol a variant trains with: released (a NASH id ending in -rel) or paper
    (every other NASH id and the equal-budget baselines)."""
    v = parse_nash_stage(variant)
    return v.protocol if isinstance(v, NashVariant) else "paper"


def check_depth(variant: str, n_enc: int, n_dec: int) -> None:
    """ValueError when a model of n_enc + n_dec blocks cannot have this variant."""
    parse(variant).check_depth(n_enc, n_dec)


def group(variant: str, baseline: str = TEACHER) -> str:
    """baseline, decoder (only the decoder pruned), encoder, both (symmetric), other, nash,
    budget (an equal-budget baseline)."""
    if variant == baseline:
        return "baseline"
    v = parse(variant)
    if isinstance(v, NashVariant):
        return "nash"
    if isinstance(v, BaselineVariant):
        return "budget"
    if v.enc_sixths == 6:
        return "decoder"
    if v.dec_sixths == 6:
        return "encoder"
    return "both" if v.enc_sixths == v.dec_sixths else "other"


def sixths(variant: str) -> tuple[int | None, int | None]:
    """(l_enc, l_dec) in sixths for e{E}d{D} and its equal-budget baselines; (None, None) for
    NASH (not a sixths variant)."""
    v = parse(variant)
    if isinstance(v, BaselineVariant):
        v = v.depth
    return (v.enc_sixths, v.dec_sixths) if isinstance(v, DepthVariant) else (None, None)


def sort_key(variant: str) -> tuple:
    """Paper order (e6d6, e6d5..e6d1, e5d6..e1d6, e5d5..e1d1), other e/d deepest first, then
    NASH by decoder depth, selection, encoder mode, sparsity and protocol, then equal-budget
    baselines in their depth variant's order, kd before ce."""
    v = parse(variant)
    if isinstance(v, BaselineVariant):
        depth = sort_key(v.depth.id)
        return (3, depth[0] * 1000 + depth[1], v.objective != "kd", 0.0, False)
    if isinstance(v, DepthVariant):
        if variant in PAPER:
            return (0, PAPER.index(variant), "", 0.0, False)
        return (1, -(v.enc_sixths * 10 + v.dec_sixths), "", 0.0, False)
    # the released protocol right after its paper twin
    return (2, v.decoder_layers, f"{v.layer_selection}-{v.encoder_mode}", v.target_sparsity,
            v.protocol == "released")


def sort(variants: Iterable[str]) -> list[str]:
    return sorted(set(variants), key=sort_key)
