"""The GPU slot allocator, without GPUs: fake counts, real processes, real locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asymprune import gpu_slots

# A job that records its CUDA_VISIBLE_DEVICES, then runs until its stop file appears.
JOB = r"""
import os, signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
def on_term(signum, frame):
    out.with_suffix(".term").write_text("term")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
out.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
while not out.with_suffix(".stop").exists():
    time.sleep(0.05)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def start(tmp_path: Path, name: str, *opts: str, rc: int = 0,
          extra_env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    out = tmp_path / f"{name}.gpu"
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("SLURM_JOB_ID", None)
    env.update(extra_env or {})
    # the wrapper's own messages go to <name>.err (a file: a pipe nobody reads could block it)
    with open(out.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "asymprune.gpu_slots", "--lock-dir",
                                 str(tmp_path / "locks"), "--poll-seconds", "0.1", *opts, "--",
                                 sys.executable, str(job), str(out), str(rc)],
                                env=env, stderr=err)
    return proc, out


def wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def stop(out: Path) -> None:
    out.with_suffix(".stop").write_text("")


def test_visible_gpus(monkeypatch):
    assert gpu_slots.visible_gpus("3") == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # a scheduler's allocation is respected
    assert gpu_slots.visible_gpus("auto") == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots.visible_gpus("auto") == []
    assert gpu_slots.parse_visible("-1") == []  # the usual way to hide every GPU
    assert gpu_slots.parse_visible("1,-1,2") == ["1"]  # CUDA stops at the first invalid id
    assert gpu_slots.parse_visible("NoDevFiles") == []


def test_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path):
    a, out_a = start(tmp_path, "a", "--gpus", "2")
    b, out_b = start(tmp_path, "b", "--gpus", "2")
    ids = {wait_for(out_a), wait_for(out_b)}
    assert ids == {"0", "1"}
    c, out_c = start(tmp_path, "c", "--gpus", "2")
    time.sleep(1.0)
    assert not out_c.exists()  # both GPUs are held: the third job waits, and says so
    assert "busy; waiting" in out_c.with_suffix(".err").read_text()
    stop(out_a)
    assert a.wait(timeout=30) == 0
    assert wait_for(out_c) == out_a.read_text()  # it takes the GPU that was freed
    for out, proc in ((out_b, b), (out_c, c)):
        stop(out)
        assert proc.wait(timeout=30) == 0


def test_a_killed_job_releases_its_gpu(tmp_path):
    a, out_a = start(tmp_path, "a", "--gpus", "1")
    assert wait_for(out_a) == "0"
    b, out_b = start(tmp_path, "b", "--gpus", "1")
    time.sleep(0.5)
    assert not out_b.exists()
    a.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel drops the flock
    a.wait(timeout=30)
    assert wait_for(out_b) == "0"
    stop(out_b)
    assert b.wait(timeout=30) == 0


def test_sigterm_is_forwarded_and_return_codes_propagate(tmp_path):
    a, out_a = start(tmp_path, "a", "--gpus", "1")
    wait_for(out_a)
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) == 143  # the job's own exit code after its SIGTERM handler
    assert out_a.with_suffix(".term").read_text() == "term"
    b, out_b = start(tmp_path, "b", "--gpus", "1", rc=3)
    wait_for(out_b)
    stop(out_b)
    assert b.wait(timeout=30) == 3


def test_multi_gpu_jobs_take_their_gpus_together(tmp_path):
    a, out_a = start(tmp_path, "a", "--gpus", "4", "--gpus-per-job", "2")
    b, out_b = start(tmp_path, "b", "--gpus", "4", "--gpus-per-job", "2")
    got = sorted([wait_for(out_a), wait_for(out_b)])
    assert got == ["0,1", "2,3"]
    for out, proc in ((out_a, a), (out_b, b)):
        stop(out)
        assert proc.wait(timeout=30) == 0


def test_no_gpu_runs_unpinned(tmp_path):
    a, out_a = start(tmp_path, "a", "--gpus", "0")
    assert wait_for(out_a) == "<unset>"
    assert "no GPU; running unpinned" in out_a.with_suffix(".err").read_text()
    stop(out_a)
    assert a.wait(timeout=30) == 0
    with pytest.raises(SystemExit):
        gpu_slots.main(["--gpus", "1", "--gpus-per-job", "2", "--", "true"])


def test_inside_a_slurm_job_the_pool_is_the_jobs_own_allocation(tmp_path):
    # cgroup-confined SLURM jobs on one node all see their own GPU as id 0: no shared lock
    slurm = {"SLURM_JOB_ID": "41", "CUDA_VISIBLE_DEVICES": "0"}
    a, out_a = start(tmp_path, "a", extra_env=slurm)
    b, out_b = start(tmp_path, "b", extra_env=dict(slurm, SLURM_JOB_ID="42"))
    assert wait_for(out_a) == "0" and wait_for(out_b) == "0"  # both run at once
    for out, proc in ((out_a, a), (out_b, b)):
        stop(out)
        assert proc.wait(timeout=30) == 0
    # one allocation with two GPUs (salloc --gpus=2, snakemake inside): its jobs are spread
    # over exactly those ids, whatever --gpus says, and a third job waits
    alloc = {"SLURM_JOB_ID": "43", "CUDA_VISIBLE_DEVICES": "3,5"}
    c, out_c = start(tmp_path, "c", "--gpus", "8", extra_env=alloc)
    d, out_d = start(tmp_path, "d", extra_env=alloc)
    assert {wait_for(out_c), wait_for(out_d)} == {"3", "5"}
    e, out_e = start(tmp_path, "e", extra_env=alloc)
    time.sleep(0.5)
    assert not out_e.exists()
    stop(out_c)
    assert c.wait(timeout=30) == 0
    assert wait_for(out_e) == out_c.read_text()
    for out, proc in ((out_d, d), (out_e, e)):
        stop(out)
        assert proc.wait(timeout=30) == 0
    # a SLURM job that asked for no GPU runs unpinned, even where nvidia-smi would list some
    f, out_f = start(tmp_path, "f", extra_env={"SLURM_JOB_ID": "44"})
    assert wait_for(out_f) == "<unset>"
    stop(out_f)
    assert f.wait(timeout=30) == 0
