"""The machinery behind ``asymprune.settings``: a settings dataclass in and out of JSON schema,
config blocks and command lines (pure Python: the workflow imports it while Snakemake parses).

From one dataclass of ``asymprune.settings`` this module derives

- the JSON schema of its config block (:func:`block_schema`; ``asymprune.workflow_config``
  writes them into the committed ``workflow/schemas/config.schema.yaml``);
- the validated settings of merged config blocks (:func:`build`: ``refinetune`` over
  ``finetune``), with the dataclass's cross-field checks (``problems``);
- a stage's command line (:func:`add_arguments`): one flag per setting (``--learning-rate``),
  plus ``--settings JSON`` (the whole block, what the workflow passes) and ``--config-key``
  (so that an error names ``refinetune.learning_rate``, not a flag);
- the parsed command line as two objects (:func:`parse`): the stage's own arguments (paths,
  tags) and its frozen settings, which the stage passes on as they are.

Values resolve as: dataclass default < ``--settings`` JSON < explicit flags. Every message
names a setting the same way (:func:`key_name`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import jsonschema


class SettingsError(ValueError):
    """A setting out of its bounds or a contradiction between settings; one line per problem."""


def setting(default: Any = dataclasses.MISSING, help: str = "", *, ge=None, gt=None, le=None,
            lt=None, choices=None, stage: bool = True, schema: dict | None = None):
    """A dataclass field with its bounds and help. ``stage=False``: a workflow-only setting
    (in the schema, not a flag of the stage). ``schema``: the JSON schema of the value, for
    types the generic mapping does not cover (per-split dicts)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "stage": stage, "schema": schema}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# naming a setting in a message

# the block of explicit command-line flags (``build``'s layers): a value from it is named by
# its flag
FLAG = "--"


def flag(name: str) -> str:
    """``learning_rate`` -> ``--learning-rate``."""
    return "--" + name.replace("_", "-")


def key_name(block: str | None, name: str, *, bare: str = "setting") -> str:
    """How every message names setting ``name`` that came from config block ``block``:
    ``config key refinetune.learning_rate`` (the workflow ran the stage with ``--config-key
    refinetune``), ``--learning-rate`` (block :data:`FLAG`: an explicit flag), and without a
    block (a bare command line) ``setting learning_rate``, or its flag with ``bare="flag"``."""
    if block == FLAG or (not block and bare == "flag"):
        return flag(name)
    if block:
        return f"config key {block}.{name}"
    return f"setting {name}"


def _type_hint(instance: Any, schema: dict) -> str:
    # PyYAML reads 1e-4 (no dot) as a string: the usual reason a number is "not a number"
    if isinstance(instance, str) and "number" in str(schema.get("type")):
        try:
            float(instance)
            return " (YAML reads a number without a dot, like 1e-4, as text: write 1.0e-4)"
        except ValueError:
            pass
    return ""


def schema_message(e: jsonschema.ValidationError) -> str:
    """A JSON-schema violation in a user's words (the generic part; the config adds its own)."""
    if e.validator == "additionalProperties":
        return e.message.replace("Additional properties are not allowed", "unknown key(s)")
    return e.message + (_type_hint(e.instance, e.schema) if e.validator == "type" else "")


# ---------------------------------------------------------------------------------------------
# schema


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _value_schema(f: dataclasses.Field, tp) -> dict:
    m = f.metadata
    if m["schema"] is not None:
        return copy.deepcopy(m["schema"])
    optional, tp = _is_optional(tp)
    bounds = {k2: m[k] for k, k2 in (("ge", "minimum"), ("gt", "exclusiveMinimum"),
                                      ("le", "maximum"), ("lt", "exclusiveMaximum"))
              if m[k] is not None}
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        item_schema = {"type": _JSON_TYPES[item], **bounds}
        if m["choices"]:
            item_schema["enum"] = list(m["choices"])
        out = {"type": "array", "items": item_schema, "uniqueItems": True}
        # an empty list is a valid "nothing" only where the default is one (arch_only)
        if _default(f) != []:
            out["minItems"] = 1
        return out
    out = {"type": [_JSON_TYPES[tp], "null"] if optional else _JSON_TYPES[tp], **bounds}
    if m["choices"]:
        out["enum"] = list(m["choices"]) + ([None] if optional else [])
    return out


def block_schema(cls, fields: tuple[str, ...] | None = None, *, defaults: bool = True,
                 description: str | None = None) -> dict:
    """JSON schema of a config block made of ``cls``'s fields (or the named ones).

    ``defaults=False`` is for override blocks (``refinetune``): a key left out is inherited, so
    no default may be filled in there. A field without a default is required. ``description``
    replaces the class's docstring as the block's description.
    """
    hints = _hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        if fields is not None and f.name not in fields:
            continue
        s = _value_schema(f, hints[f.name])
        s["description"] = f.metadata["help"]
        if not _has_default(f):
            required.append(f.name)
        elif defaults:
            s["default"] = _default(f)
        props[f.name] = s
    out = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    text = description if description is not None else (cls.__doc__ or "")
    if text.strip():
        out["description"] = " ".join(text.split())
    return out


# ---------------------------------------------------------------------------------------------
# validation


def build(cls, layers: list[tuple[str | None, dict]]):
    """The settings of merged config blocks, validated; later blocks override earlier ones.

    ``layers``: ``[("finetune", {...}), ("refinetune", {...})]``. Each problem names the key
    the value came from (:func:`key_name` of the last block that sets it, else of the first
    block: its default). A block named None is a bare command line's; :data:`FLAG`, its flags.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str | None] = {}
    for key, block in layers:
        for name, value in (block or {}).items():
            merged[name] = value
            origin[name] = key
    names = {f.name for f in dataclasses.fields(cls)}
    first = layers[0][0]
    where = lambda name: key_name(origin.get(name, first), name)  # noqa: E731
    lines = [f"{where(n)}: unknown key" for n in merged if n not in names]
    if not lines:
        schema = block_schema(cls, defaults=False)
        for e in jsonschema.Draft202012Validator(schema).iter_errors(merged):
            path = list(map(str, e.absolute_path))
            if e.validator == "required" or not path:
                key = f"config key {first}" if first else "settings"
            else:
                key = ".".join([where(path[0]), *path[1:]])
            lines.append(f"{key}: {schema_message(e)}")
    if lines:
        raise SettingsError("\n".join(lines))
    hints = _hints(cls)
    values = {}
    for name, value in merged.items():
        _, tp = _is_optional(hints[name])
        # JSON schema counts 3.0 as an integer; the stage wants a real int
        values[name] = int(value) if tp is int and isinstance(value, float) else value
    obj = cls(**values)
    problems = obj.problems()
    if problems:
        lines = []
        for n, msg in problems:
            for other in sorted(names, key=len, reverse=True):
                # inside a message a config key goes without "config key"
                msg = msg.replace(f"@{other}", where(other).removeprefix("config key "))
            lines.append(f"{where(n)}: {msg}")
        raise SettingsError("\n".join(lines))
    return obj


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def to_json(obj) -> str:
    """The block as the one-line JSON a rule passes with ``--settings`` (keys sorted, so that a
    Snakemake params value only changes when a setting does)."""
    return json.dumps(as_dict(obj), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# the stages' command lines


def _converter(tp, name: str):
    optional, tp = _is_optional(tp)

    def convert(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        if tp is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        if tp is dict:
            # a JSON object, or KEY=VALUE with VALUE read as JSON where it is (5, null), else text
            if text.lstrip().startswith("{"):
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
                return value
            key, sep, raw = text.partition("=")
            if not sep or not key:
                raise argparse.ArgumentTypeError(f"expected KEY=VALUE or a JSON object, got "
                                                 f"{text!r}")
            try:
                return {key: json.loads(raw)}
            except json.JSONDecodeError:
                return {key: raw}
        return tp(text)

    convert.__name__ = name  # argparse names it in "invalid <name> value"
    return convert


def add_arguments(parser: argparse.ArgumentParser, cls, title: str | None = None) -> None:
    """One flag per stage setting of ``cls``, plus ``--settings`` and ``--config-key``.

    Flags default to "not given" (argparse.SUPPRESS): the default lives in the dataclass only.
    """
    group = parser.add_argument_group(title or f"settings ({cls.__name__}; defaults from "
                                                f"asymprune.settings)")
    group.add_argument("--settings", metavar="JSON",
                       help="the whole settings block as a JSON object, or a .json file; "
                            "explicit flags override it (what the workflow passes)")
    group.add_argument("--config-key", metavar="KEY",
                       help="config key of the block, e.g. refinetune: errors name it")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata["stage"]:
            continue
        tp = hints[f.name]
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            kw.update(nargs="+", type=_converter(item, f.name))
        elif tp is dict:
            kw.update(nargs="+", type=_converter(tp, f.name), metavar="KEY=VALUE")
        else:
            kw["type"] = _converter(tp, f.name)
        if f.metadata["choices"]:
            kw["choices"] = list(f.metadata["choices"])
        default = f" (default: {_default(f)!r})" if _has_default(f) else " (required)"
        group.add_argument(flag(f.name), help=f.metadata["help"] + default, **kw)


def _from_namespace(cls, args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The settings of ``--settings`` and the flags in ``args``, or a usage error naming the
    config key or flag of each problem."""
    block: dict[str, Any] = {}
    if getattr(args, "settings", None):
        text = args.settings.strip()
        try:
            block = json.loads(text if text.startswith("{") else Path(text).read_text())
        except (OSError, json.JSONDecodeError) as e:
            parser.error(f"--settings: not a JSON object or a readable .json file ({e})")
        if not isinstance(block, dict):
            parser.error("--settings: expected a JSON object")
        # workflow-only keys (evaluate.split, benchmark.enabled, ...) are not the stage's
        stage_only = {f.name for f in dataclasses.fields(cls) if not f.metadata["stage"]}
        block = {k: v for k, v in block.items() if k not in stage_only}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.metadata["stage"] and hasattr(args, f.name)}
    hints = _hints(cls)
    for name, value in flags.items():
        if hints[name] is dict:  # nargs="+" of one-key dicts -> one dict
            flags[name] = {k: v for item in value for k, v in item.items()}
    key = getattr(args, "config_key", None)
    try:
        return build(cls, [(key, block), (FLAG, flags)] if flags else [(key, block)])
    except SettingsError as e:
        parser.error(str(e))


def parse(parser: argparse.ArgumentParser, cls, argv: list[str] | None = None
          ) -> tuple[argparse.Namespace, Any]:
    """Parse a stage's command line (built with :func:`add_arguments`) into its own arguments
    (paths, tags, ``config_key``; no setting) and its frozen settings ``cls``."""
    args = parser.parse_args(argv)
    obj = _from_namespace(cls, args, parser)
    own = {f.name for f in dataclasses.fields(cls)} | {"settings"}
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in own}), obj


def record(args: argparse.Namespace, obj, **facts: Any) -> dict[str, Any]:
    """What a sidecar records as the stage's arguments (and a checkpoint's fingerprint is made
    of): its own arguments, the settings it used, and ``facts`` it derived (e.g. NASH's target
    sparsity from the variant id)."""
    return {**vars(args), **as_dict(obj), **facts}
