"""Chaos drill (marker ``drill``): the micro DAG, killed at random moments, rerun as a user
would, ends byte-identical to an uninterrupted run.

The reference is one uninterrupted run of ``DRILL`` (the micro preset with more training
steps, so that kills land mid-step and mid-checkpoint). The drill then drives one results
folder through a seeded plan of kills: each run, the first and then every rerun, is killed
(SIGKILL to its whole process group: Snakemake and every job) at a moment drawn from the seed
for the plan's next stage and kind: ``step`` (after the k-th logged training step, plus a
delay), ``checkpoint`` (while a checkpoint is being written into ``staging/``), ``model``
(while a model folder is being written under its ``.tmp-*`` name) or ``running`` (some
seconds into an evaluation, benchmark or report job). The next run is what a user types: the
same command, after ``--unlock`` when Snakemake says the folder is locked, with
``--rerun-incomplete`` when Snakemake asks for it, and nothing deleted by hand. After each
kill every output already written equals the reference's; after the last run every model's
weights, every ROUGE JSON's metrics and predictions, and the training losses in the sidecars
do. The SIGTERM drill does the same with pre-emption: each training stage saves a checkpoint
at the step the signal reached it and exits, and the rerun resumes from it.

Both drills start from the reference's data and tokenizer, copied with their times: the
Unigram trainer of ``tokenizers`` is not deterministic between processes (the same 64
documents gave three different ``tokenizer.json`` in three runs, scores differing in their
last bits and tied pieces swapped), so a tokenizer trained again would make the evaluation
inputs differ whatever the kills did.

``ASYMPRUNE_DRILL_SEED=N`` draws other moments.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_workflow import MICRO, REPO, SNAKEMAKE, write_config

pytestmark = pytest.mark.drill

SEED = int(os.environ.get("ASYMPRUNE_DRILL_SEED", "16"))

# The micro preset with 24 teacher steps, 12 NASH steps, a checkpoint every 3 steps, one
# pruned depth variant and the eager engine only: long enough to kill mid-step and
# mid-checkpoint, short enough for CI (2 cores).
DRILL = copy.deepcopy(MICRO)
DRILL.update(variants=["e6d6", "e6d3"], baselines={"variants": [], "objectives": ["kd"]})
DRILL["finetune"].update(max_steps=24, save_steps=3)
DRILL["refinetune"] = {"max_steps": 9}
DRILL["nash"]["train"].update(max_steps=12, save_steps=3)
DRILL["nash"]["finetune"] = {"max_steps": 9}
# timings are not compared here: no cell may be flagged disturbed on a busy CI machine (a
# report whose cells are all disturbed has no Pareto front to draw)
DRILL["benchmark"].update(engines=["eager"])
DRILL["report"] = {**DRILL.get("report", {}), "max_spread": 1000.0, "max_foreign_load": 1.0}
RESULTS = Path("results/micro")

# (rule, kind) in an order the DAG allows: teacher, then prune/NASH (run side by side), their
# fine-tunes, evaluation, benchmark, report. Kinds: see the module docstring.
SIGKILL_PLAN = [
    ("finetune", "step"), ("finetune", "checkpoint"), ("finetune", "step"),
    ("finetune", "model"), ("prune_layers", "model"), ("nash", "step"),
    ("nash", "checkpoint"), ("refinetune", "checkpoint"), ("nash", "model"),
    ("nash_finetune", "step"), ("nash_finetune", "checkpoint"), ("evaluate", "running"),
    ("benchmark", "running"), ("report", "running"),
]
SIGTERM_PLAN = [("finetune", "step"), ("nash", "step"), ("refinetune", "step"),
                ("nash_finetune", "step")]
SIGTERM_TARGETS = [str(RESULTS / f"models/micro/news/{v}/model/sidecar.json")
                   for v in ("e6d3", "nash-d2-uniform-l0s30")]

# where each rule writes a checkpoint / a model folder (relative to RESULTS)
CHECKPOINT_WRITES = {
    "finetune": "checkpoints/*/*/e6d6/finetune/staging/*",
    "refinetune": "checkpoints/*/*/e[0-9]d[0-9]/refinetune/staging/*",
    "nash": "checkpoints/*/*/nash-*/nash/staging/*",
    "nash_finetune": "checkpoints/*/*/nash-*/finetune/staging/*",
}
MODEL_WRITES = {
    "finetune": "models/*/*/e6d6/model.tmp-*",
    "prune_layers": "models/*/*/e[0-9]d[0-9]/pruned.tmp-*",
    "refinetune": "models/*/*/e[0-9]d[0-9]/model.tmp-*",
    "nash": "models/*/*/nash-*/pruned.tmp-*",
    "nash_finetune": "models/*/*/nash-*/model.tmp-*",
}
# a logged optimizer step: the Trainer's log dict, the NASH stage's "step k/n"
STEP_LINE = re.compile(r"\{'loss': |INFO asymprune\.nash: step \d+/\d+")
FINETUNE_KEYS = {"finetune": "finetune", "refinetune": "refinetune",
                 "nash.finetune": "nash_finetune"}
POLL_S = 0.002


def stage_of(argv: list[str]) -> str | None:
    """The rule a process runs, from its command line (`python -m asymprune.<stage> ...`)."""
    if "-m" not in argv[:-1] or not argv[argv.index("-m") + 1].startswith("asymprune."):
        return None
    module = argv[argv.index("-m") + 1].split(".", 1)[1]
    if module == "finetune":
        return FINETUNE_KEYS[argv[argv.index("--config-key") + 1]]
    return module


def group_processes(pgid: int) -> list[tuple[int, str | None]]:
    """(pid, rule or None) of every live process in the process group."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            # fields after "comm)": state, ppid, pgrp; comm may hold spaces and parentheses
            state, _, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            if int(pgrp) != pgid or state == "Z":
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue   # gone meanwhile
        found.append((int(pid), stage_of([a for a in argv if a])))
    return found


PREEMPTED = re.compile(r"stopped by SIGTERM at step (\d+)")
CHECKPOINT_SUBDIR = {"finetune": "finetune", "refinetune": "refinetune", "nash": "nash",
                     "nash_finetune": "finetune"}


def preempted_checkpoints(results: Path, since: float) -> list[str]:
    """Each training job a SIGTERM stopped (its log says at which step) and whether the
    checkpoint of that step is there."""
    found = []
    for log in sorted(results.glob("logs/*/*/*/*.log")):
        m = PREEMPTED.search(log.read_text(errors="replace"))
        if log.stat().st_mtime < since or m is None:
            continue
        rule, size, dataset, variant = log.parts[-4], log.parts[-3], log.parts[-2], log.stem
        step = int(m.group(1))
        name = f"step-{step:08d}" if rule == "nash" else f"checkpoint-{step}"
        ck = results / "checkpoints" / size / dataset / variant / CHECKPOINT_SUBDIR[rule] / name
        found.append(f"{rule} {variant} at step {step} -> "
                     f"{ck.relative_to(results) if ck.is_dir() else 'NO CHECKPOINT'}")
    return found


def writes_in_flight(results: Path) -> list[str]:
    """Checkpoints being staged and model folders being written, as paths under results/."""
    paths = [p for pattern in {**CHECKPOINT_WRITES, **MODEL_WRITES}.values()
             for p in results.glob(pattern)]
    return sorted({str(p.relative_to(results)) for p in paths})


@dataclass
class Kill:
    number: int
    target: tuple[str, str]
    signal: str
    running: list[str]           # the rules whose jobs were running at the kill
    writing: list[str]           # writes in flight at the kill
    note: str = ""
    preempted: list[str] = field(default_factory=list)   # SIGTERM: the checkpoints saved
    reruns: list[str] = field(default_factory=list)   # what the next run needed

    def line(self) -> str:
        stage, kind = self.target
        return (f"kill {self.number:2d} {self.signal}: planned {stage}/{kind}{self.note}; "
                f"running {', '.join(self.running) or 'no job'}; writing "
                f"{', '.join(self.writing) or 'nothing'}; "
                + (f"pre-empted: {', '.join(self.preempted) or 'no training job'}; "
                   if self.signal == "SIGTERM" else "")
                + f"rerun: {' -> '.join(self.reruns) or 'plain'}")


class Run:
    """One Snakemake process (its own process group), its output in a file."""

    def __init__(self, workdir: Path, args: list[str], n: int):
        self.workdir, self.started = workdir, time.time()
        self.out_path = workdir / f"snakemake-{n:02d}.out"
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))

    @property
    def output(self) -> str:
        return self.out_path.read_text()

    def planned_rules(self) -> set[str] | None:
        """The rules of Snakemake's job table, once it printed it."""
        out = self.output
        if "Job stats:" not in out:
            return None
        table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
        return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)}

    def kill(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait_for_all(self) -> None:
        self.proc.wait(timeout=60)
        # jobs outlive Snakemake after a SIGTERM (they save a checkpoint first): wait for all
        deadline = time.time() + 120
        while group_processes(self.proc.pid):
            assert time.time() < deadline, "the killed run's jobs did not exit"
            time.sleep(0.1)


class Watcher:
    """Fires at the moment a (rule, kind) target calls for, drawn from ``rng``."""

    def __init__(self, target, rng: random.Random, results: Path, run: Run):
        self.stage, self.kind = target
        self.results, self.run = results, run
        self.steps = rng.randint(1, 6)            # kind step: after this many logged steps
        # kind running: seconds after the job started (a job spends the first ~5 importing)
        self.delay = rng.uniform(0.0, 0.4) if self.kind == "step" else rng.uniform(2.0, 10.0)
        self.pattern = {"checkpoint": CHECKPOINT_WRITES, "model": MODEL_WRITES}.get(
            self.kind, {}).get(self.stage)
        # leftovers of an earlier kill are not this run's writes
        self.before = set(results.glob(self.pattern)) if self.pattern else set()
        self.seen_at = self.gone_at = self.armed_at = None
        self.note = ""

    def _steps_logged(self) -> int:
        count = 0
        for log in self.results.glob(f"logs/{self.stage}/*/*/*.log"):
            if log.stat().st_mtime >= self.run.started:   # this run's job, not an old log
                count += len(STEP_LINE.findall(log.read_text(errors="replace")))
        return count

    def fire(self, running: set[str], now: float) -> bool:
        if self.stage in running:
            self.seen_at = self.seen_at or now
            self.gone_at = None
        elif self.seen_at is not None:
            self.gone_at = self.gone_at or now
            if now - self.gone_at > 1.0:   # the job ended before the moment came
                self.note = " (moment missed: the job ended first)"
                return True
        if self.seen_at is None:
            return False
        if self.pattern:
            return bool(set(self.results.glob(self.pattern)) - self.before)
        if self.kind == "step" and self.armed_at is None and self._steps_logged() >= self.steps:
            self.armed_at = now
        if self.kind == "running":
            self.armed_at = self.seen_at
        return self.armed_at is not None and now - self.armed_at >= self.delay


def start_from_reference_inputs(workdir: Path, reference: Path) -> None:
    """The reference's data and tokenizer, with their times (see the module docstring)."""
    for stage in ("data", "tokenizer"):
        shutil.copytree(reference / RESULTS / stage, workdir / RESULTS / stage)


def command(configfile: Path, targets: list[str]) -> list[str]:
    return [*targets, "--cores", "2", "-s", str(REPO / "Snakefile"), "--configfile",
            str(configfile)]


def drive(workdir: Path, configfile: Path, plan, sig: int, targets: list[str],
          reference: Path | None = None) -> list[Kill]:
    """Run the plan's kills, then the last run to its end; returns the kills."""
    rng = random.Random(SEED)
    results = workdir / RESULTS
    base = command(configfile, targets)
    kills: list[Kill] = []
    plan = list(plan)
    extra: list[str] = []
    n = 0
    while True:
        n += 1
        run = Run(workdir, base + extra, n)
        watchers: list[Watcher] | None = None
        fired = False
        last_scan, running = 0.0, set()
        while run.proc.poll() is None:
            now = time.time()
            if now - last_scan > 0.05:
                running = {s for _, s in group_processes(run.proc.pid) if s}
                last_scan = now
                planned = run.planned_rules()
                if watchers is None and planned is not None:
                    # a rule this run has no job of is done: its targets go; the others are
                    # all watched at once (jobs run side by side), the first moment wins
                    plan = [t for t in plan if t[0] in planned]
                    watchers = [Watcher(t, rng, results, run) for t in plan]
            hit = next((w for w in watchers or [] if w.fire(running, now)), None)
            if hit is not None:
                fired = True
                run.kill(sig)   # first, then look: the files stay as the kill left them
                writing = writes_in_flight(results)
                run.wait_for_all()
                kills.append(Kill(len(kills) + 1, (hit.stage, hit.kind),
                                  signal.Signals(sig).name, sorted(running), writing, hit.note))
                if sig == signal.SIGTERM:
                    kills[-1].preempted = preempted_checkpoints(results, run.started)
                plan.remove((hit.stage, hit.kind))
                break
            time.sleep(POLL_S)
        if fired:
            if reference is not None:
                assert_same_so_far(results, reference / RESULTS, kills[-1])
            extra = []
            continue
        out = run.output
        if run.proc.returncode == 0:
            return kills
        # what a user does with Snakemake's message
        if "cannot be locked" in out or "Directory cannot be locked" in out:
            subprocess.run([SNAKEMAKE, "--unlock", *base], cwd=workdir, check=True,
                           capture_output=True, timeout=300)
            if kills:
                kills[-1].reruns.append("--unlock")
        elif "--rerun-incomplete" in out and "--rerun-incomplete" not in extra:
            extra = ["--rerun-incomplete"]
            if kills:
                kills[-1].reruns.append("--rerun-incomplete")
        else:
            raise AssertionError(f"run {n} failed in a way a user cannot rerun past:\n{out}")


# ---- comparisons


def weights(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes()
            for p in results.glob("models/*/*/*/*/model.safetensors")}


def rouge(results: Path) -> dict[str, tuple]:
    out = {}
    for p in results.glob("eval/*/*/*.json"):
        doc = json.loads(p.read_text())
        preds = p.with_name(p.name.replace(".json", ".predictions.jsonl")).read_bytes()
        out[str(p.relative_to(results))] = (doc["metrics"], doc["metrics_ci95"], preds)
    return out


def training_losses(results: Path) -> dict[str, object]:
    """The whole-run training loss of each fine-tune and the NASH stage's loss summary."""
    out = {}
    for p in results.glob("models/*/*/*/*/sidecar.json"):
        side = json.loads(p.read_text())
        if side["stage"] == "finetune":
            out[str(p.relative_to(results))] = side["metrics"]["train_loss"]
        elif side["stage"] == "nash":
            out[str(p.relative_to(results))] = side["loss_summary"]
    return out


def assert_same_so_far(results: Path, ref: Path, kill: Kill) -> None:
    ours, theirs = weights(results), weights(ref)
    for name, data in ours.items():
        assert data == theirs[name], f"after {kill.line()}: {name} differs"
    ours_r, theirs_r = rouge(results), rouge(ref)
    for name, value in ours_r.items():
        assert value == theirs_r[name], f"after {kill.line()}: {name} differs"


def assert_identical(results: Path, ref: Path, only: set[str] | None = None) -> str:
    ours, theirs = weights(results), weights(ref)
    if only is not None:
        theirs = {k: v for k, v in theirs.items() if k in only}
    assert sorted(ours) == sorted(theirs)
    assert [k for k in ours if ours[k] != theirs[k]] == []
    ours_r, theirs_r = rouge(results), rouge(ref)
    if only is None:
        assert sorted(ours_r) == sorted(theirs_r)
    assert [k for k in ours_r if ours_r[k] != theirs_r[k]] == []
    losses, ref_losses = training_losses(results), training_losses(ref)
    assert {k: pytest.approx(v) if isinstance(v, float) else v for k, v in losses.items()} \
        == {k: ref_losses[k] for k in losses}
    return f"{len(ours)} model weights, {len(ours_r)} ROUGE JSONs, {len(losses)} training losses"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    configfile = write_config(workdir / "drill.yaml", DRILL)
    t0 = time.time()
    proc = subprocess.run([SNAKEMAKE, *command(configfile, [])], cwd=workdir,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nuninterrupted run: {time.time() - t0:.0f} s")
    return workdir


@pytest.mark.timeout(1800)
def test_sigkill_at_random_moments_never_blocks_the_rerun(reference, tmp_path):
    configfile = write_config(tmp_path / "drill.yaml", DRILL)
    start_from_reference_inputs(tmp_path, reference)
    t0 = time.time()
    kills = drive(tmp_path, configfile, SIGKILL_PLAN, signal.SIGKILL, [], reference)
    print(f"\nSIGKILL drill, seed {SEED}, {time.time() - t0:.0f} s:")
    for k in kills:
        print("  " + k.line())
    same = assert_identical(tmp_path / RESULTS, reference / RESULTS)
    print(f"  completed without manual cleanup; byte-identical to the uninterrupted run: {same}")
    stages = {s for k in kills for s in k.running}
    assert len(kills) >= 12, [k.line() for k in kills]
    assert len(stages) >= 4, stages


@pytest.mark.timeout(1200)
def test_sigterm_preempted_jobs_checkpoint_and_the_rerun_completes_identically(
        reference, tmp_path):
    configfile = write_config(tmp_path / "drill.yaml", DRILL)
    start_from_reference_inputs(tmp_path, reference)
    t0 = time.time()
    kills = drive(tmp_path, configfile, SIGTERM_PLAN, signal.SIGTERM, SIGTERM_TARGETS,
                  reference)
    print(f"\nSIGTERM drill, seed {SEED}, {time.time() - t0:.0f} s:")
    for k in kills:
        print("  " + k.line())
    results = tmp_path / RESULTS
    # each pre-empted training job wrote a checkpoint at the step the signal reached it
    for k in kills:
        if k.target[0] in k.running:
            assert k.preempted and not any("NO CHECKPOINT" in p for p in k.preempted), k.line()
    only = set(weights(results))
    same = assert_identical(results, reference / RESULTS, only)
    print(f"  completed; byte-identical to the uninterrupted run: {same}")
    assert len(kills) >= 3 and {k.target[0] for k in kills} >= {"finetune", "nash"}
