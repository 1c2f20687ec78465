"""Run a command pinned to its own free GPU(s): ``python -m asymprune.gpu_slots -- CMD ...``.

Snakemake counts a ``gpu`` resource but never says *which* GPU a job gets (its issue #281):
with ``--resources gpu=4`` four jobs all start on GPU 0. This wrapper takes a lock per GPU
(an exclusive ``flock`` on ``<lock-dir>/gpu<ID>.lock``), sets ``CUDA_VISIBLE_DEVICES`` to the
GPUs it holds, runs the command, and holds the locks until the command ends. The kernel drops
a flock when its holder dies, so a crashed or SIGKILLed job never leaks its GPU; the child is
asked to die with the wrapper (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps using a GPU
whose lock is gone.

GPUs to choose from: ``--gpus N`` (ids 0..N-1), or ``auto``: the ids in CUDA_VISIBLE_DEVICES
when set (a scheduler's choice is respected), else one per line of ``nvidia-smi -L``. With no GPU
at all the command runs unpinned (a CPU machine), said on stderr.

Inside a SLURM job (SLURM_JOB_ID set) the pool is the job's own allocation, CUDA_VISIBLE_DEVICES,
whatever ``--gpus`` says, and the locks live in a subfolder per SLURM job. Two reasons: where
SLURM confines devices with cgroups every job on a node sees its GPU as id 0, so one lock per id
across jobs would make them wait for each other for nothing; and a Snakemake run inside one
multi-GPU allocation (``salloc --gpus=4``) still needs its jobs spread over those GPUs, or they
all land on the first one again. A SLURM job without GPUs runs unpinned.

Locks are opened read-only (flock does not need write access), so one lock folder can be
shared by several users when it is created world-writable and sticky (mode 1777).

Stdlib only, no torch: it starts before the job and must not touch CUDA itself.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def default_lock_dir() -> Path:
    user = os.environ.get("USER") or str(os.getuid())
    return Path(os.environ.get("ASYMPRUNE_GPU_LOCK_DIR", f"/tmp/asymprune-gpu-locks-{user}"))


def visible_gpus(spec: str) -> list[str]:
    """GPU ids this machine (or this scheduler allocation) offers."""
    if spec != "auto":
        n = int(spec)
        if n < 0:
            raise ValueError(f"--gpus must be >= 0 or auto, got {spec}")
        return [str(i) for i in range(n)]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return parse_visible(env)
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def parse_visible(value: str) -> list[str]:
    """Ids (or GPU-UUIDs) in a CUDA_VISIBLE_DEVICES value; "" and "-1" mean no GPU."""
    ids = [g.strip() for g in value.split(",") if g.strip()]
    # CUDA stops at the first invalid entry ("-1" is the usual way to hide every GPU), and some
    # SLURM versions write NoDevFiles for a GPU without a device file
    for i, g in enumerate(ids):
        if g.startswith("-") or g == "NoDevFiles":
            return ids[:i]
    return ids


def try_acquire(ids: list[str], k: int, lock_dir: Path) -> tuple[list[str], list[int]] | None:
    """Lock k free GPUs at once, or none: holding a partial set could deadlock two jobs."""
    held_ids, fds = [], []
    for gid in ids:
        # read-only is enough for flock, and works on another user's lock file in a shared folder
        fd = os.open(lock_dir / f"gpu{gid}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held_ids.append(gid)
        fds.append(fd)
        if len(held_ids) == k:
            return held_ids, fds
    for fd in fds:
        os.close(fd)  # closing the descriptor drops its flock
    return None


def try_acquire_serialized(ids: list[str], k: int, lock_dir: Path
                           ) -> tuple[list[str], list[int]] | None:
    """try_acquire with one chooser at a time, so jobs get the lowest free ids as blocks.

    Without it two 2-GPU jobs starting together on 4 GPUs interleave their scans (A takes 0,
    B takes 1, A skips 1 and takes 2, ...) and end on 0,2 and 1,3: each still gets two GPUs,
    but a later 2-GPU job sees its pair split across whatever frees first, and neighbour ids
    are the ones that usually share an NVLink/PCIe switch. The mutex is held only while
    choosing (microseconds), never while the job runs.
    """
    fd = os.open(lock_dir / "choose.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return try_acquire(ids, k, lock_dir)
    finally:
        os.close(fd)


def acquire(ids: list[str], k: int, lock_dir: Path, poll_s: float) -> tuple[list[str], list[int]]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    next_note = start
    while True:
        got = try_acquire_serialized(ids, k, lock_dir)
        if got:
            return got
        # say so at once, then every 10 min: a job log that stays silent for hours looks hung
        if time.monotonic() >= next_note:
            waited_min = (time.monotonic() - start) / 60
            print(f"gpu_slots: all of GPUs {ids} are busy; waiting for {k} to free up"
                  + (f" ({waited_min:.0f} min so far)" if waited_min >= 1 else "")
                  + f" [locks in {lock_dir}]", file=sys.stderr, flush=True)
            next_note += 600
        time.sleep(poll_s)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the lock is still released; the child may outlive the wrapper


def run(cmd: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
    # SLURM sends SIGTERM before a pre-emption kill: the training job must get it to save.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    rc = child.wait()
    return 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N, as a shell reports it


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asymprune.gpu_slots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", default="auto",
                   help="number of GPUs to share (ids 0..N-1), or auto (CUDA_VISIBLE_DEVICES, "
                        "else nvidia-smi -L); inside a SLURM job its own GPUs, always")
    p.add_argument("--gpus-per-job", type=int, default=1, help="GPUs this command needs")
    p.add_argument("--lock-dir", type=Path, default=None,
                   help="one lock file per GPU (default $ASYMPRUNE_GPU_LOCK_DIR or "
                        "/tmp/asymprune-gpu-locks-$USER); share it between runs of one machine. "
                        "Inside a SLURM job a subfolder slurm-job-<id> of it")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="wait between tries when busy")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given (put it after --)")
    if args.gpus_per_job < 1:
        p.error("--gpus-per-job must be >= 1")
    env = dict(os.environ)
    lock_dir = args.lock_dir or default_lock_dir()
    slurm_job = env.get("SLURM_JOB_ID")
    if slurm_job:
        ids = parse_visible(env.get("CUDA_VISIBLE_DEVICES", ""))
        lock_dir = lock_dir / f"slurm-job-{slurm_job}"
        where = f"SLURM job {slurm_job}"
    else:
        try:
            ids = visible_gpus(args.gpus)
        except ValueError:
            p.error(f"--gpus must be a number >= 0 or auto, got {args.gpus!r}")
        where = "this machine"
    if not ids:
        print(f"gpu_slots: {where} has no GPU; running unpinned", file=sys.stderr, flush=True)
        return run(cmd, env)
    if args.gpus_per_job > len(ids):
        p.error(f"--gpus-per-job {args.gpus_per_job} but {where} has only GPUs {ids}")
    try:
        held, fds = acquire(ids, args.gpus_per_job, lock_dir, args.poll_seconds)
    except PermissionError as e:
        p.error(f"cannot use the GPU lock folder {lock_dir} ({e}); pass --lock-dir or set "
                "ASYMPRUNE_GPU_LOCK_DIR to a folder you can write")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(held)
    print(f"gpu_slots: running on GPU {env['CUDA_VISIBLE_DEVICES']} of {where}",
          file=sys.stderr, flush=True)
    try:
        return run(cmd, env)
    finally:
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    raise SystemExit(main())
