"""Resumable training checkpoints shared by the training stages (finetune, nash).

A rerun resumes from the newest checkpoint only if it was written by the same settings and
the same code: a job that Snakemake reruns because a hyper-parameter or the stage's code
changed must start over, not finish the old run's training. And only if it is complete: every
stage writes a checkpoint into a staging folder and renames it into place when it is whole
(``publish``), and checks each one before resuming it (``resumable``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from asymprune.provenance import read_json, stage_code_hash, write_json

log = logging.getLogger("asymprune.checkpoints")


def fingerprint(args: Mapping[str, Any], exclude: set[str], stage: str) -> dict:
    """The settings that shape a training run (paths and logging left out) plus the code hash;
    ``args``: what the stage records (``settings_io.record``)."""
    fp = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(args.items())
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


# ---------------------------------------------------------------------------------------------
# complete checkpoints only
#
# A checkpoint is written into <checkpoint-dir>/staging/<name> and renamed to
# <checkpoint-dir>/<name> once every file is in it (``publish``), so a kill at any moment
# leaves either the whole checkpoint or a staging folder. ``resumable`` deletes the staging
# folder (a cut-off write, never a checkpoint) and checks each checkpoint folder before it can
# be resumed: one that lacks a file or holds one that cannot be read (written by code that
# was not atomic, cut off while rotation deleted it, or damaged since) is moved aside into
# <checkpoint-dir>/incomplete/ with a warning, and the newest complete one is resumed.

STAGING = "staging"
ASIDE = "incomplete"


def staging_dir(ckpt: Path) -> Path:
    return ckpt / STAGING


def publish(staged: Path, final: Path) -> None:
    """Rename a fully written checkpoint into place: one rename(2), atomic on one file system."""
    if final.exists():
        set_aside(final, "another checkpoint of the same step replaces it")
    os.replace(staged, final)
    if not any(staged.parent.iterdir()):   # nothing else being written: no empty folder left
        staged.parent.rmdir()


def set_aside(path: Path, why: str) -> Path:
    """Move ``path`` into ``<its folder>/incomplete/`` (``.2``, ``.3``, ... if taken)."""
    aside = path.parent / ASIDE
    aside.mkdir(exist_ok=True)
    target, n = aside / path.name, 1
    while target.exists():
        n += 1
        target = aside / f"{path.name}.{n}"
    os.replace(path, target)
    log.warning("checkpoint folder %s is incomplete (%s): moved it to %s and will not resume "
                "from it; delete it once you no longer need it", path, why, target)
    return target


def resumable(ckpt: Path, prefix: str, problems: Callable[[Path], list[str]]) -> list[Path]:
    """The complete checkpoints ``<ckpt>/<prefix>-<step>``, oldest first, after deleting a
    cut-off staging folder and setting aside every checkpoint folder ``problems`` finds fault
    with (anything else named ``<prefix>-*``, e.g. a ``.tmp-*`` folder, is set aside too)."""
    staging = staging_dir(ckpt)
    if staging.exists():
        log.info("deleting %s: a checkpoint write that was cut off", staging)
        shutil.rmtree(staging)
    complete = []
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)")
    for path in sorted(ckpt.glob(f"{prefix}-*")):
        m = pattern.fullmatch(path.name)
        found = problems(path) if m and path.is_dir() else ["not a checkpoint folder name"]
        if found:
            set_aside(path, "; ".join(found))
        else:
            complete.append((int(m.group(1)), path))
    return [path for _, path in sorted(complete)]


def torch_file_problem(path: Path) -> str | None:
    """None if ``path`` is a whole ``torch.save`` file: a zip archive, whose central directory
    torch writes last (a file cut off anywhere before its end does not open)."""
    if not path.is_file():
        return f"{path.name} missing"
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return f"{path.name} holds no pickled object"
    except (zipfile.BadZipFile, OSError) as e:
        return f"{path.name} unreadable ({e})"
    return None


def safetensors_problem(path: Path) -> str | None:
    """None if ``path`` is a whole safetensors file (its header covers the whole file)."""
    from safetensors import safe_open

    if not path.is_file():
        return f"{path.name} missing"
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as e:   # safetensors raises its own SafetensorError (and OSError)
        return f"{path.name} unreadable ({e})"
    return None


def trainer_checkpoint_problems(path: Path) -> list[str]:
    """What a Trainer checkpoint folder lacks to be resumed: weights, optimizer, scheduler,
    trainer state and RNG state, each present and readable. Empty when complete."""
    found = []
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            found += [p for s in shards if (p := safetensors_problem(path / s))]
        except (ValueError, KeyError) as e:
            found.append(f"{index.name} unreadable ({e})")
    elif p := safetensors_problem(path / "model.safetensors"):
        found.append(p)
    found += [p for name in ("optimizer.pt", "scheduler.pt")
              if (p := torch_file_problem(path / name))]
    rng = sorted(path.glob("rng_state*.pth"))
    if not rng:
        found.append("rng_state.pth missing")
    found += [p for r in rng if (p := torch_file_problem(r))]
    try:
        json.loads((path / "trainer_state.json").read_text())["global_step"]
    except FileNotFoundError:
        found.append("trainer_state.json missing")
    except (ValueError, KeyError) as e:
        found.append(f"trainer_state.json unreadable ({e})")
    return found


def whole_run_mean(history: list[dict], key: str, last_step: int) -> float:
    """The mean of ``key`` over every optimizer step 1..last_step from a Trainer's
    ``log_history`` (carried in each checkpoint's ``trainer_state.json``, so resumes included).

    Each logged value averages the steps since the previous log, so it weighs (its step - the
    previous logged step): logs at steps 1, 10, 12 of 4.0, 3.0, 2.0 give
    (4.0 x 1 + 3.0 x 9 + 2.0 x 2) / 12 = 35 / 12 = 2.9167. The Trainer's own ``train_loss``
    averages only the steps since the last resume.
    """
    logs = [(h["step"], h[key]) for h in history if key in h]
    steps = [s for s, _ in logs]
    if not logs or steps != sorted(set(steps)) or steps[-1] != last_step:
        raise RuntimeError(f"the log history does not cover steps 1..{last_step} once each "
                           f"(logged {key!r} at steps {steps}); cannot average {key!r} over the "
                           f"run")
    total, previous = 0.0, 0
    for step, value in logs:
        total += value * (step - previous)
        previous = step
    return total / last_step
