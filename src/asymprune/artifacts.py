"""Files and folders that appear whole or not at all.

Snakemake deletes a rule's outputs before it reruns a job and trusts an output that exists.
A model folder is therefore built under a temporary name beside its final place and renamed
into place at the end: a crash leaves ``<dir>.tmp-*`` behind, never a half-written model, and
the next write of the same folder deletes it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``final`` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # what a killed writer of the same folder left (Snakemake never runs one job twice at once)
    for stale in final.parent.glob(f"{glob.escape(final.name)}.tmp-*"):
        shutil.rmtree(stale)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Snakemake creates the parent folders of declared outputs (e.g. `<dir>/config.json`),
    # so `final` may exist, empty or stale, before the rename.
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
