"""Which blocks of a T5 stack survive: pure functions, no torch.

Campos & Zhai cut a stack to sixths of its depth; NASH selects k decoder blocks uniformly.
All indices are 0-based block indices. What a variant id means (``e3d6``, ``nash-d3-...``) is
``asymprune.variants``; this module only knows stacks, counts and strategies.
"""

from __future__ import annotations

import math

# The authors' tables (same table for encoder and decoder), keyed by stack depth, then sixths.
PUBLISHED: dict[int, dict[int, tuple[int, ...]]] = {
    8: {1: (0,), 2: (0, 7), 3: (0, 2, 5, 7), 4: (0, 2, 4, 5, 7), 5: (0, 2, 3, 4, 5, 7)},
    12: {1: (0, 11), 2: (0, 3, 8, 11), 3: (0, 2, 4, 6, 8, 10), 4: (0, 2, 4, 5, 6, 7, 8, 11),
         5: (0, 1, 2, 4, 5, 6, 7, 8, 10, 11)},
    24: {1: (0, 5, 11, 23), 2: (0, 1, 3, 7, 11, 15, 19, 23),
         3: (0, 2, 4, 6, 8, 12, 14, 16, 18, 20, 22, 23),
         4: (0, 1, 2, 4, 6, 7, 8, 12, 14, 15, 16, 18, 20, 21, 22, 23),
         5: (0, 1, 2, 3, 4, 6, 7, 8, 9, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)},
}

SIXTHS_STRATEGIES = ("auto", "published", "spaced")
NASH_STRATEGIES = ("uniform", "low", "high")


def sixths_count(n_layers: int, sixths: int) -> int:
    """Blocks kept for ``sixths``/6 of a stack: floor(n * s / 6), at least 1.

    floor matches every published table: 8 layers give 1, 2, 4, 5, 6 blocks for s = 1..5
    (8 * 2 / 6 = 2.67 -> 2; 8 * 5 / 6 = 6.67 -> 6); 12 and 24 layers divide exactly.
    """
    if not 1 <= sixths <= 6:
        raise ValueError(f"sixths must be in 1..6, got {sixths}")
    if n_layers < 1:
        raise ValueError(f"a stack needs at least one layer, got {n_layers}")
    return max(1, math.floor(n_layers * sixths / 6))


def spaced(n_layers: int, k: int) -> tuple[int, ...]:
    """k blocks spread as evenly as possible over n, always keeping the first and last.

    Index j sits at round-half-up(j * (n - 1) / (k - 1)); k = 1 keeps block 0 (it owns the
    relative position bias). For n = 6: k=3 -> (0, 3, 5), k=4 -> (0, 2, 3, 5).
    """
    _check_k(n_layers, k)
    if k == 1:
        return (0,)
    return tuple(math.floor(j * (n_layers - 1) / (k - 1) + 0.5) for j in range(k))


def uniform(n_layers: int, k: int) -> tuple[int, ...]:
    """NASH uniform selection: floor((L - 1) / (k - 1) * j) for j = 0..k-1; k = 1 keeps block 0.

    For L = 12: k=2 -> (0, 11), k=3 -> (0, 5, 11), k=4 -> (0, 3, 7, 11).
    """
    _check_k(n_layers, k)
    if k == 1:
        return (0,)
    return tuple(math.floor((n_layers - 1) / (k - 1) * j) for j in range(k))


def low(n_layers: int, k: int) -> tuple[int, ...]:
    """The first k blocks (NASH ablation)."""
    _check_k(n_layers, k)
    return tuple(range(k))


def high(n_layers: int, k: int) -> tuple[int, ...]:
    """The last k blocks (NASH ablation)."""
    _check_k(n_layers, k)
    return tuple(range(n_layers - k, n_layers))


def _check_k(n_layers: int, k: int) -> None:
    if not 1 <= k <= n_layers:
        raise ValueError(f"cannot keep {k} of {n_layers} blocks")


def select_k(n_layers: int, k: int, strategy: str) -> tuple[int, ...]:
    """k blocks of an n-block stack by a NASH strategy (uniform, low, high) or ``spaced``."""
    funcs = {"uniform": uniform, "low": low, "high": high, "spaced": spaced}
    if strategy not in funcs:
        raise ValueError(f"unknown layer selection {strategy!r}; choose one of {sorted(funcs)}")
    return funcs[strategy](n_layers, k)


def select_sixths(n_layers: int, sixths: int, strategy: str = "auto") -> tuple[int, ...]:
    """Blocks kept when a stack is cut to ``sixths``/6 of its depth.

    ``published``: the authors' tables (8, 12, 24 layers only); ``spaced``: the general rule
    above with floor(n * s / 6) blocks; ``auto``: published where a table exists, else spaced.
    """
    if strategy not in SIXTHS_STRATEGIES:
        raise ValueError(f"unknown layer selection {strategy!r}; choose one of {SIXTHS_STRATEGIES}")
    if sixths == 6:
        sixths_count(n_layers, 6)
        return tuple(range(n_layers))
    if strategy in ("auto", "published") and n_layers in PUBLISHED:
        return PUBLISHED[n_layers][sixths]
    if strategy == "published":
        raise ValueError(f"no published layer table for a {n_layers}-layer stack "
                         f"(tables exist for {sorted(PUBLISHED)}); use 'spaced' or 'auto'")
    return spaced(n_layers, sixths_count(n_layers, sixths))
