"""NASH variant ids: pure parsing and formatting (no torch; the workflow imports this).

Grammar (all lower case)::

    nash-d{D}-{SELECTION}-{ENCODER}
    D         decoder blocks kept, an integer >= 1 (d3 = 3 blocks)
    SELECTION uniform | low | high            (asymprune.layers.NASH_STRATEGIES)
    ENCODER   none                            no encoder pruning
              l0s{P}                          L0 width pruning (heads + FFN units), target P %
              layerss{P}                      uniform encoder *layer* selection at ~P % sparsity
    P         an integer percentage 1..99 (s30 = 30 % = target sparsity 0.30)

Examples: ``nash-d3-uniform-l0s30`` (the paper's default), ``nash-d2-low-l0s30`` (Table 3
ablation), ``nash-d4-uniform-layerss30`` / ``nash-d4-uniform-none`` (Table 4 ablations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asymprune.layers import NASH_STRATEGIES

ENCODER_MODES = ("none", "l0", "layers")
VARIANT_ID_RE = re.compile(
    r"^nash-d(?P<d>[1-9][0-9]*)-(?P<sel>[a-z]+)-(?:(?P<none>none)|(?P<mode>l0|layers)s(?P<pct>[1-9][0-9]?))$")


@dataclass(frozen=True)
class NashVariant:
    decoder_layers: int
    layer_selection: str
    encoder_mode: str            # none | l0 | layers
    target_sparsity: float       # fraction; 0.0 for encoder_mode "none"

    @property
    def id(self) -> str:
        return format_variant_id(self.decoder_layers, self.layer_selection, self.encoder_mode,
                                 self.target_sparsity)

    def cli_args(self) -> list[str]:
        """The ``python -m asymprune.nash`` flags this variant fixes."""
        args = ["--decoder-layers", str(self.decoder_layers), "--layer-selection",
                self.layer_selection, "--encoder-mode", self.encoder_mode]
        if self.encoder_mode != "none":
            args += ["--target-sparsity", f"{self.target_sparsity:g}"]
        return args


def parse_variant_id(variant: str) -> NashVariant:
    """``'nash-d3-uniform-l0s30'`` -> ``NashVariant(3, 'uniform', 'l0', 0.3)``; anything else is a
    ValueError naming the grammar."""
    m = VARIANT_ID_RE.match(variant)
    if not m or m.group("sel") not in NASH_STRATEGIES:
        raise ValueError(f"NASH variant {variant!r} is not of the form "
                         f"nash-d{{D}}-{{{'|'.join(NASH_STRATEGIES)}}}-{{none|l0s{{P}}|layerss{{P}}}} "
                         f"with D >= 1 decoder blocks and P in 1..99 percent")
    if m.group("none"):
        return NashVariant(int(m.group("d")), m.group("sel"), "none", 0.0)
    return NashVariant(int(m.group("d")), m.group("sel"), m.group("mode"), int(m.group("pct")) / 100)


def is_variant_id(variant: str) -> bool:
    try:
        parse_variant_id(variant)
    except ValueError:
        return False
    return True


def format_variant_id(decoder_layers: int, layer_selection: str, encoder_mode: str,
                      target_sparsity: float = 0.0) -> str:
    """Inverse of :func:`parse_variant_id`; the sparsity must be a whole percentage."""
    if not isinstance(decoder_layers, int) or decoder_layers < 1:
        raise ValueError(f"decoder_layers must be an int >= 1, got {decoder_layers!r}")
    if layer_selection not in NASH_STRATEGIES:
        raise ValueError(f"layer selection {layer_selection!r} is not one of {NASH_STRATEGIES}")
    if encoder_mode not in ENCODER_MODES:
        raise ValueError(f"encoder mode {encoder_mode!r} is not one of {ENCODER_MODES}")
    head = f"nash-d{decoder_layers}-{layer_selection}-"
    if encoder_mode == "none":
        if target_sparsity:
            raise ValueError(f"encoder mode 'none' prunes nothing; got target {target_sparsity}")
        return head + "none"
    pct = round(target_sparsity * 100)
    if not 1 <= pct <= 99 or abs(pct - target_sparsity * 100) > 1e-6:
        raise ValueError(f"target sparsity {target_sparsity} is not a whole percentage in 1..99 % "
                         f"(variant ids name it as s{{P}})")
    return f"{head}{encoder_mode}s{pct}"
