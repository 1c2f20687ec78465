"""Data stage: one summarization data set -> ``{train,validation,test}.jsonl`` + ``data.json``.

Three kinds of source, one output format (rows ``{"id", "source", "target"}``, ``source``
already carrying the prefix, e.g. FLAN-T5's ``"summarize: "``):

- ``hub``: ``datasets.load_dataset(path, name)`` — CNN/DailyMail 3.0.0 (article -> highlights),
  XSUM (document -> summary);
- ``local``: JSONL/CSV/JSON/parquet files, one per split, under ``--path`` (QIWS-style sets);
- ``generated``: the deterministic demo task of :mod:`asymprune.demo_data` (offline demo).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from asymprune.artifacts import write_jsonl
from asymprune.provenance import make_sidecar, write_json

SPLITS = ("train", "validation", "test")
FORMATS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}


def _pairs(items: list[str] | None, flag: str, cast=str) -> dict[str, Any]:
    """``["train=5", ...]`` -> ``{"train": 5}``; names must be one of SPLITS."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in SPLITS:
            raise ValueError(f"{flag} expects SPLIT=VALUE with SPLIT in {SPLITS}, got {item!r}")
        out[key] = cast(value)
    return out


def load_hub(path: str, name: str | None, split: str):
    import datasets

    return datasets.load_dataset(path, name, split=split)


def load_local(path: Path, fmt: str, file: str):
    import datasets

    if fmt not in FORMATS:
        raise ValueError(f"unknown local format {fmt!r}; choose one of {sorted(FORMATS)}")
    full = path / file
    if not full.is_file():
        raise FileNotFoundError(f"local data file {full} does not exist (data set path "
                                f"{path}, format {fmt}); set the data set's `path` in the config")
    return datasets.load_dataset(FORMATS[fmt], data_files={"data": str(full)}, split="data")


def to_rows(ds, *, source_column: str, target_column: str, id_column: str | None,
            split: str, max_samples: int | None, prefix: str, empty_policy: str,
            where: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Validate columns and texts of one split, apply limits and prefix."""
    columns = list(ds.column_names)
    for col, flag in ((source_column, "--source-column"), (target_column, "--target-column"),
                      (id_column, "--id-column")):
        if col is not None and col not in columns:
            raise ValueError(f"{where}: split {split!r} has no column {col!r} ({flag}); "
                             f"available columns: {columns}")
    if len(ds) == 0:
        raise ValueError(f"{where}: split {split!r} is empty")
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    rows, empty_ids = [], []
    for i, ex in enumerate(ds):
        src, tgt = ex[source_column], ex[target_column]
        rid = str(ex[id_column]) if id_column else f"{split}-{i}"
        if not isinstance(src, str) or not isinstance(tgt, str) or not src.strip() or not tgt.strip():
            empty_ids.append(rid)
            continue
        rows.append({"id": rid, "source": prefix + src.strip(), "target": tgt.strip()})
    if empty_ids and empty_policy == "error":
        raise ValueError(f"{where}: split {split!r} has {len(empty_ids)} example(s) with an empty "
                         f"source or target (first ids: {empty_ids[:5]}); clean the data or set "
                         f"the empty-text policy to 'drop'")
    if not rows:
        raise ValueError(f"{where}: split {split!r} has no usable example after dropping "
                         f"{len(empty_ids)} empty one(s)")
    return rows, {"kept": len(rows), "dropped_empty": len(empty_ids)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asymprune.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, choices=("hub", "local", "generated"))
    p.add_argument("--output-dir", required=True, type=Path)
    src = p.add_argument_group("hub and local sources")
    src.add_argument("--path", help="hub data set id (hub) or folder of split files (local)")
    src.add_argument("--name", default=None, help="hub configuration, e.g. 3.0.0 for cnn_dailymail")
    src.add_argument("--format", default="jsonl", help=f"local file format: {sorted(FORMATS)}")
    src.add_argument("--split", action="append", metavar="OUT=IN",
                     help="source split (hub) or file name (local) for each output split; "
                          "default: the same split name (hub), '<split>.<format>' (local)")
    src.add_argument("--source-column", default="source")
    src.add_argument("--target-column", default="target")
    src.add_argument("--id-column", default=None)
    gen = p.add_argument_group("generated demo data")
    gen.add_argument("--num-samples", action="append", metavar="SPLIT=N",
                     help="examples to generate per split")
    gen.add_argument("--seed", type=int, default=0, help="generator seed (splits use seed+0/1/2)")
    common = p.add_argument_group("all sources")
    common.add_argument("--max-samples", action="append", metavar="SPLIT=N",
                        help="keep only the first N examples of a split")
    common.add_argument("--source-prefix", default="", help='e.g. "summarize: " for FLAN-T5')
    common.add_argument("--empty-policy", choices=("error", "drop"), default="error",
                        help="what to do with examples whose source or target is empty")
    args = p.parse_args(argv)

    t0 = time.time()
    split_map = _pairs(args.split, "--split")
    limits = _pairs(args.max_samples, "--max-samples", int)
    counts: dict[str, dict[str, int]] = {}
    outputs: dict[str, list[dict[str, str]]] = {}
    if args.kind == "generated":
        from asymprune import demo_data

        sizes = _pairs(args.num_samples, "--num-samples", int)
        missing = [s for s in SPLITS if s not in sizes]
        if missing:
            raise ValueError(f"--num-samples needs a count for every split; missing {missing}")
        for k, split in enumerate(SPLITS):
            rows = [dict(r, source=args.source_prefix + r["source"])
                    for r in demo_data.generate(sizes[split], args.seed + k)]
            outputs[split] = rows[: limits.get(split, len(rows))]
            counts[split] = {"kept": len(outputs[split]), "dropped_empty": 0}
    else:
        if not args.path:
            raise ValueError(f"--path is required for --kind {args.kind}")
        for split in SPLITS:
            if args.kind == "hub":
                ds = load_hub(args.path, args.name, split_map.get(split, split))
                where = f"hub data set {args.path}" + (f" ({args.name})" if args.name else "")
            else:
                file = split_map.get(split, f"{split}.{args.format}")
                ds = load_local(Path(args.path), args.format, file)
                where = f"local file {Path(args.path) / file}"
            outputs[split], counts[split] = to_rows(
                ds, source_column=args.source_column, target_column=args.target_column,
                id_column=args.id_column, split=split, max_samples=limits.get(split),
                prefix=args.source_prefix, empty_policy=args.empty_policy, where=where)

    for split, rows in outputs.items():
        write_jsonl(args.output_dir / f"{split}.jsonl", rows)
    write_json(args.output_dir / "data.json", make_sidecar(
        "data", vars(args), samples={s: c["kept"] for s, c in counts.items()},
        wall_time_s=time.time() - t0, dropped_empty={s: c["dropped_empty"] for s, c in counts.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
