"""Data stage: one summarization data set -> ``{train,validation,test}.jsonl`` + ``data.json``.

Three kinds of source, one output format (rows ``{"id", "source", "target"}``, ``source``
already carrying the prefix, e.g. FLAN-T5's ``"summarize: "``):

- ``hub``: ``datasets.load_dataset(path, name)`` — CNN/DailyMail 3.0.0 (article -> highlights),
  XSUM (document -> summary);
- ``local``: JSONL/CSV/JSON/parquet files, one per split, under ``--path`` (QIWS-style sets),
  read by this module (JSONL line by line: a corrupt line is named with its number);
- ``generated``: the deterministic demo task of :mod:`asymprune.demo_data` (offline demo).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from asymprune import settings, settings_io
from asymprune.artifacts import write_jsonl
from asymprune.provenance import make_sidecar, write_json

SPLITS = settings.SPLITS


class DataError(ValueError):
    """A problem with the data itself (a file, a column, a row): one line naming the config key."""


def key_of(block: str | None, name: str) -> str:
    """How to name setting ``name`` in a message: its config key when the workflow runs the
    stage (``datasets.qiws.source_column``, ``data.empty_policy``), else its flag."""
    if block and name in settings.DATA_SHARED:
        block = "data"
    return settings_io.key_name(block, name, bare="flag")


def load_hub(path: str, name: str | None, split: str):
    import datasets

    datasets.disable_progress_bars()  # a log, not a terminal: errors stay one line
    return datasets.load_dataset(path, name, split=split)


def read_jsonl_rows(path: Path, key: str) -> list[dict]:
    """Every line one JSON object: else a DataError naming the file and the 1-based line
    (the datasets JSON loader only reports a byte offset deep in a pyarrow traceback)."""
    rows = []
    # bytes, decoded line by line: a text-mode file decodes in chunks, so a bad byte would be
    # reported before the line that holds it is even read
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text ({e.reason}); fix the file or point "
                                f"{key} elsewhere") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno}); fix the "
                                f"file or point {key} elsewhere") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: a JSONL row must be an object, got "
                                f"{type(row).__name__}; fix the file or point {key} elsewhere")
            rows.append(row)
    if not rows:
        raise DataError(f"{path} has no rows; fix the file or point {key} elsewhere")
    return rows


def load_local(path: Path, fmt: str, file: str, key: str):
    """One split file as a ``datasets.Dataset``, read here rather than by
    ``datasets.load_dataset``, which expands ``$VARS`` in local paths (a folder literally
    named ``$HOME`` would be looked for in the home directory) and copies every file into its
    cache."""
    import datasets
    import pandas as pd

    full = path / file
    if not full.is_file():
        raise DataError(f"local data file {full} does not exist (format {fmt}); set {key}")
    if fmt == "jsonl":
        return datasets.Dataset.from_list(read_jsonl_rows(full, key))
    if fmt == "json":
        try:
            rows = json.loads(full.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{full}: not a JSON file ({e}); fix the file or point {key} "
                            f"elsewhere") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{full}: format json needs a JSON array of objects (one per "
                            f"example); for one object per line use format jsonl")
        return datasets.Dataset.from_list(rows)
    try:
        # text columns stay text: no NaN for an empty cell, no numbers for numeric-looking ids
        frame = (pd.read_csv(full, dtype=str, keep_default_na=False) if fmt == "csv"
                 else pd.read_parquet(full))
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{full}: cannot be read as {fmt} ({e}); fix the file or point {key} "
                        f"elsewhere") from None
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def to_rows(ds, *, d: settings.Data, block: str | None, split: str, max_samples: int | None,
            where: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Validate columns and texts of one split, apply limits and prefix."""
    columns = list(ds.column_names)
    for name in ("source_column", "target_column", "id_column"):
        col = getattr(d, name)
        if col is not None and col not in columns:
            raise DataError(f"{where}: split {split!r} has no column {col!r} "
                            f"({key_of(block, name)}); available columns: {columns}")
    if len(ds) == 0:
        raise DataError(f"{where}: split {split!r} is empty")
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    rows, empty_ids = [], []
    for i, ex in enumerate(ds):
        src, tgt = ex[d.source_column], ex[d.target_column]
        rid = str(ex[d.id_column]) if d.id_column else f"{split}-{i}"
        if not isinstance(src, str) or not isinstance(tgt, str) or not src.strip() or not tgt.strip():
            empty_ids.append(rid)
            continue
        rows.append({"id": rid, "source": d.source_prefix + src.strip(), "target": tgt.strip()})
    if empty_ids and d.empty_policy == "error":
        raise DataError(f"{where}: split {split!r} has {len(empty_ids)} example(s) with an empty "
                        f"source or target (first ids: {empty_ids[:5]}); clean the data or set "
                        f"{key_of(block, 'empty_policy')} to 'drop'")
    if not rows:
        raise DataError(f"{where}: split {split!r} has no usable example after dropping "
                        f"{len(empty_ids)} empty one(s)")
    return rows, {"kept": len(rows), "dropped_empty": len(empty_ids)}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, settings.Data]:
    """``--output-dir`` (and ``--config-key``), and the data set's settings."""
    p = argparse.ArgumentParser(prog="python -m asymprune.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, type=Path)
    settings_io.add_arguments(p, settings.Data, "data set (asymprune.settings.Data)")
    return settings_io.parse(p, settings.Data, argv)


def run(args: argparse.Namespace, d: settings.Data) -> int:
    t0 = time.time()
    limits = {s: n for s, n in d.max_samples.items() if n}
    counts: dict[str, dict[str, int]] = {}
    outputs: dict[str, list[dict[str, str]]] = {}
    if d.kind == "generated":
        from asymprune import demo_data

        for k, split in enumerate(SPLITS):
            rows = [dict(r, source=d.source_prefix + r["source"])
                    for r in demo_data.generate(d.num_samples[split], d.seed + k)]
            outputs[split] = rows[: limits.get(split, len(rows))]
            counts[split] = {"kept": len(outputs[split]), "dropped_empty": 0}
    else:
        for split in SPLITS:
            if d.kind == "hub":
                ds = load_hub(d.path, d.name, d.files.get(split, split))
                where = f"hub data set {d.path}" + (f" ({d.name})" if d.name else "")
            else:
                file = d.files.get(split, f"{split}.{d.format}")
                ds = load_local(Path(d.path), d.format, file, key_of(args.config_key, "path"))
                where = f"local file {Path(d.path) / file}"
            outputs[split], counts[split] = to_rows(
                ds, d=d, block=args.config_key, split=split, max_samples=limits.get(split),
                where=where)

    for split, rows in outputs.items():
        write_jsonl(args.output_dir / f"{split}.jsonl", rows)
    write_json(args.output_dir / "data.json", make_sidecar(
        "data", settings_io.record(args, d), samples={s: c["kept"] for s, c in counts.items()},
        wall_time_s=time.time() - t0, dropped_empty={s: c["dropped_empty"] for s, c in counts.items()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args, d = parse_args(argv)
    try:
        return run(args, d)
    except DataError as e:
        # one line a user can act on, not a traceback from inside pyarrow
        print(f"asymprune.data: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
