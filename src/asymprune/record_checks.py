"""Checked reading of a sidecar's fields, shared by the record classes (``asymprune.records``,
``asymprune.model_record``): a wrong or missing field is a ValueError naming ``where`` (the
file, and the path inside it) and the key. Pure Python."""

from __future__ import annotations

import math
import re
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")  # labels end up in file names


def json_shape(value: Any) -> Any:
    """``value`` with tuples as lists, as JSON holds it and ``from_dict`` reads it back."""
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_shape(v) for v in value]
    return value


def mapping(where: str, d: Any) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object, got {type(d).__name__}")
    return d


def field(where: str, d: dict, name: str, kind: type) -> Any:
    if name not in d:
        raise ValueError(f"{where} has no {name!r} (a file of an older format? rerun the "
                         f"stage that wrote it)")
    value = d[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}.{name} must be {kind.__name__}, got {value!r}")
    return value


def integer(where: str, d: dict, name: str, *, optional: bool = False) -> int | None:
    if optional and d.get(name) is None:
        return None
    value = field(where, d, name, int)
    if value < 0:
        raise ValueError(f"{where}.{name} must be >= 0, got {value}")
    return value


def fraction(where: str, d: dict, name: str, *, optional: bool = False) -> float | None:
    if optional and d.get(name) is None:
        return None
    value = d.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{where}.{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def blocks(where: str, d: dict, name: str) -> tuple[int, ...]:
    value = field(where, d, name, list)
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in value):
        raise ValueError(f"{where}.{name} must be a list of block indices, got {value!r}")
    return tuple(value)


def name(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"{where}: {key} must be a name fit for a file name, got {value!r}")
    return value


def number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def optional_number(where: str, key: str, value: Any) -> float | None:
    return None if value is None else number(where, key, value)


def count(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value
