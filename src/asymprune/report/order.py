"""Table order of the report's labels: variants, sizes, engines (pure Python)."""

from __future__ import annotations

from collections.abc import Iterable

from asymprune import variants
from asymprune.variants import TEACHER

SIZE_ORDER = ("small", "base", "large")
GROUPS = variants.GROUPS
ENGINE_ORDER = ("eager", "compiled", *(f"ct2-{t}" for t in ("float32", "int8_float32", "int8",
                                                             "float16", "bfloat16",
                                                             "int8_float16", "int8_bfloat16")))


def variant_key(variant: str) -> tuple:
    """Table order of a variant id (``asymprune.variants.sort_key``); an unknown id is an error."""
    return variants.sort_key(variant)


def size_key(size: str) -> tuple:
    return (0, SIZE_ORDER.index(size), "") if size in SIZE_ORDER else (1, 0, size)


def sort_variants(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=variant_key)


def sort_sizes(sizes: Iterable[str]) -> list[str]:
    return sorted(set(sizes), key=size_key)


def sort_engines(engines: Iterable[str]) -> list[str]:
    return sorted(set(engines), key=lambda e: (ENGINE_ORDER.index(e), "") if e in ENGINE_ORDER
                  else (len(ENGINE_ORDER), e))


def sixths(variant: str) -> tuple[int | None, int | None]:
    """(l_enc, l_dec) in sixths for e{E}d{D}; (None, None) for NASH (not a sixths variant)."""
    return variants.sixths(variant)


def variant_group(variant: str, baseline: str = TEACHER) -> str:
    """baseline, decoder (only the decoder pruned), encoder, both (symmetric), other, nash."""
    return variants.group(variant, baseline)
