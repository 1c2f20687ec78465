"""The exact architectures of google/flan-t5-{small,base,large}, and their depth variants.

Values are those of the hub checkpoints' ``config.json`` (T5 v1.1 family: gated-GELU FFN,
untied input/output embeddings, 32 relative-position buckets up to distance 128). A pruned
variant such as ``e3d6`` has the same config with fewer blocks, so the architecture-only
benchmark can time every variant without downloading or training anything.

Parameter counts, checked in tests against Table 1 of the asymmetry paper (lm_head left out,
the shared embedding counted once in the total and once in each stack). For small:
  embedding       32128 x 512                                            = 16,449,536
  encoder block   q,k,v,o 4 x 512 x 384 + gated FFN 3 x 512 x 1024 + 2 norms x 512
                  = 786,432 + 1,572,864 + 1,024                          =  2,360,320
  decoder block   + cross-attention 786,432 + a third norm 512           =  3,147,264
  encoder         8 x 2,360,320 + bias 32 x 6 + final norm 512           = 18,883,264
  decoder         8 x 3,147,264 + 192 + 512                              = 25,178,816
  total           16,449,536 + 18,883,264 + 25,178,816                   = 60,511,616
"""

from __future__ import annotations

from typing import Any

from asymprune.variants import TEACHER, parse_depth

# Shared by all three sizes (hub config.json of every FLAN-T5 checkpoint).
_COMMON: dict[str, Any] = dict(
    vocab_size=32128,  # 32,100 sentencepiece pieces + 28 padding rows (multiple of 128)
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6,
    initializer_factor=1.0,
    dropout_rate=0.1,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
    is_encoder_decoder=True,
    # FLAN-T5 has an untied lm_head. T5Config in transformers 5 forces the attribute back to
    # True but reads this kwarg to decide `scale_decoder_outputs` (False for v1.1 / FLAN), so
    # passing it keeps the forward pass identical to the real checkpoints.
    tie_word_embeddings=False,
)

FLAN_T5: dict[str, dict[str, Any]] = {
    "small": dict(d_model=512, d_ff=1024, num_heads=6, d_kv=64, num_layers=8,
                  num_decoder_layers=8),
    "base": dict(d_model=768, d_ff=2048, num_heads=12, d_kv=64, num_layers=12, num_decoder_layers=12),
    "large": dict(d_model=1024, d_ff=2816, num_heads=16, d_kv=64, num_layers=24,
                  num_decoder_layers=24),
}

SIZES: tuple[str, ...] = tuple(FLAN_T5)

# Table 1 of Campos & Zhai: parameters without lm_head; each stack counts the shared embedding.
TABLE1: dict[str, dict[str, int]] = {
    "small": {"total": 60_511_616, "encoder": 35_332_800, "decoder": 41_628_352},
    "base": {"total": 222_903_552, "encoder": 109_628_544, "decoder": 137_949_312},
    "large": {"total": 750_251_008, "encoder": 341_231_104, "decoder": 441_918_976},
}

HUB_IDS: dict[str, str] = {size: f"google/flan-t5-{size}" for size in SIZES}


def _check_size(size: str) -> None:
    if size not in FLAN_T5:
        raise ValueError(f"unknown FLAN-T5 size {size!r}; choose one of {list(SIZES)}")


def config_kwargs(size: str, variant: str = TEACHER, strategy: str = "auto") -> dict[str, Any]:
    """T5Config kwargs of FLAN-T5 ``size`` cut to depth ``variant`` (``e{E}d{D}``).

    Layer counts come from the same selection the pruning stage uses, e.g. small e2d6:
    encoder keeps blocks (0, 7) -> 2 layers, decoder keeps all 8.
    """
    _check_size(size)
    kwargs = {**_COMMON, **FLAN_T5[size]}
    enc, dec = parse_depth(variant).blocks(kwargs["num_layers"], kwargs["num_decoder_layers"],
                                           strategy)
    kwargs["num_layers"] = len(enc)
    kwargs["num_decoder_layers"] = len(dec)
    return kwargs


def flan_t5_config(size: str, variant: str = TEACHER, strategy: str = "auto"):
    """A ``T5Config`` with the architecture of FLAN-T5 ``size`` at depth ``variant``."""
    from transformers import T5Config  # imported here: this module stays cheap to import

    return T5Config(**config_kwargs(size, variant, strategy))
