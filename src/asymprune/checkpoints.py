"""Resumable training checkpoints shared by the training stages (finetune, nash).

A rerun resumes from the newest checkpoint only if it was written by the same settings and
the same code: a job that Snakemake reruns because a hyper-parameter or the stage's code
changed must start over, not finish the old run's training.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from asymprune.provenance import read_json, stage_code_hash, write_json

log = logging.getLogger("asymprune.checkpoints")


def fingerprint(args: argparse.Namespace, exclude: set[str], stage: str) -> dict:
    """The settings that shape a training run (paths and logging left out) plus the code hash."""
    fp = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
          if k not in exclude}
    fp["code"] = stage_code_hash(stage)
    return fp


def discard_stale(ckpt: Path, fp: dict, pattern: str) -> None:
    """Delete checkpoints (``ckpt/<pattern>``) written under another fingerprint; record ours."""
    ckpt.mkdir(parents=True, exist_ok=True)
    fp_file = ckpt / "fingerprint.json"
    if fp_file.exists() and read_json(fp_file) != fp:
        log.warning("checkpoints in %s were written with other settings or code; starting over",
                    ckpt)
        for child in ckpt.glob(pattern):
            shutil.rmtree(child)
    write_json(fp_file, fp)
