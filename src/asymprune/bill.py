"""The grid's bill before it runs: the cost model of ``python -m asymprune.plan`` (no torch).

A calibration (``asymprune.calibrate``) times, per model size, three architectures with random
weights: every block (E+D), one encoder block (1+D) and one decoder block (E+1). Their costs fit
a line in the block counts,

    t(e, d) = a + b e + c d      b = (t(E, D) - t(1, D)) / (E - 1)
                                 c = (t(E, D) - t(E, 1)) / (D - 1)
                                 a = t(E, D) - b E - c D,

so a depth variant's cost follows from how many blocks it keeps (``BlockCost``). A job's wall
time is then a start-up time (Python, torch and transformers imports, measured) plus its
examples or decoding steps times these costs. Two measured corrections: a NASH-stage
training example costs the calibration's timed NASH step over a student step plus a teacher
forward (``plan.nash_step_ratio``: hooks, gates, losses, its smaller batch), and on a CPU the
jobs of rules that share the cores cost the measured co-run slowdown more. Stated
approximations, each an upper bound where it is not exact:
  - every training example costs its configured full lengths (``max_source_length`` and
    ``max_target_length``): batches are padded to their longest row, and real documents
    (CNN/DM, XSum) mostly exceed 512 tokens;
  - a forward pass without gradients costs 1/3 of a training step (backward ~ 2x forward);
  - generation runs ``gen_tokens`` decoding steps per batch (the batch runs until its longest
    row ends);
  - every NASH-stage run is billed at the ratio of the one variant timed (a gated one where
    the config has one: equal-budget baselines, without gates, cost a little less).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORWARD_SHARE = 1 / 3  # forward / (forward + backward): backward costs about twice the forward

# A SLURM job killed at its time limit is resubmitted from scratch (or its checkpoint); one that
# asks for far more waits longer in the queue. Requests are the estimate times RUNTIME_MARGIN
# plus RUNTIME_FLOOR_MIN minutes (scheduling, file system), and memory times MEM_MARGIN.
RUNTIME_MARGIN = 1.5
RUNTIME_FLOOR_MIN = 5
MEM_MARGIN = 1.3
MEM_ROUND_MB = 500


@dataclass(frozen=True)
class BlockCost:
    """Seconds of one unit of work (an example, a decoding step) as a + b e + c d."""

    a: float
    b: float
    c: float

    def at(self, enc: int, dec: int) -> float:
        return self.a + self.b * enc + self.c * dec

    @classmethod
    def fit(cls, enc: int, dec: int, full: float, one_enc: float, one_dec: float) -> "BlockCost":
        """From t(E, D) = full, t(1, D) = one_enc, t(E, 1) = one_dec (E, D > 1)."""
        if enc < 2 or dec < 2:
            raise ValueError(f"fitting needs two depths per stack, got {enc}+{dec} blocks")
        b = (full - one_enc) / (enc - 1)
        c = (full - one_dec) / (dec - 1)
        return cls(full - b * enc - c * dec, b, c)


def optimizer_steps(n_examples: int, effective_batch: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps of a training job, as transformers' Trainer and the NASH stage count them:
    ``max_steps`` when > 0, else ceil(epochs x ceil(n / effective batch))."""
    if max_steps > 0:
        return max_steps
    return math.ceil(epochs * math.ceil(n_examples / effective_batch))


@dataclass(frozen=True)
class Job:
    """One job's estimate: wall seconds, peak host memory (MB), GPUs it holds, and its key (the
    path of its Snakemake benchmark file below results/<preset>/benchmarks/, without .tsv)."""

    rule: str
    wall_s: float
    mem_mb: float
    gpus: int = 0
    key: str = ""


def train_job_s(startup_s: float, steps: int, effective_batch: int, example_s: float,
                eval_examples: int, *, teacher_example_s: float = 0.0) -> float:
    """Start-up + steps x batch x (student example [+ teacher forward]) + the final evaluation's
    forward passes on ``eval_examples`` validation examples."""
    per_example = example_s + FORWARD_SHARE * teacher_example_s
    return (startup_s + steps * effective_batch * per_example
            + eval_examples * FORWARD_SHARE * example_s)


def train_mem_mb(base_mb: float, params: int, act_mb_per_example: float, batch: int) -> float:
    """Peak host memory of a CPU training job: the process after its imports, 16 bytes per
    parameter (fp32 weights, gradients and AdamW's two moments) and the activations of one
    per-device batch."""
    return base_mb + params * 16 / 2**20 + act_mb_per_example * batch


def infer_mem_mb(base_mb: float, params: int, models: int = 1) -> float:
    """Peak host memory of an inference job holding ``models`` models of ``params`` fp32
    parameters (the benchmark holds every variant; caches of short sequences left out)."""
    return base_mb + models * params * 4 / 2**20


def generate_job_s(startup_s: float, n_docs: int, batch: int, encode_doc_s: float,
                   step_s: float, gen_tokens: int) -> float:
    """Start-up + per batch: its documents' encoder passes + ``gen_tokens`` decoding steps of
    the whole batch (``step_s`` is the time of one step at this batch size)."""
    batches = math.ceil(n_docs / batch)
    return startup_s + n_docs * encode_doc_s + batches * gen_tokens * step_s


def request(job_wall_s: float, job_mem_mb: float) -> tuple[int, int]:
    """SLURM (runtime minutes, mem_mb) for a job estimated at ``job_wall_s`` and ``job_mem_mb``:
    runtime = ceil(wall x 1.5 / 60 s) + 5 min; mem = memory x 1.3, rounded up to 500 MB."""
    runtime = math.ceil(job_wall_s * RUNTIME_MARGIN / 60) + RUNTIME_FLOOR_MIN
    mem = math.ceil(job_mem_mb * MEM_MARGIN / MEM_ROUND_MB) * MEM_ROUND_MB
    return runtime, mem


@dataclass(frozen=True)
class RuleBill:
    rule: str
    jobs: int
    wall_per_job_s: float   # mean over the rule's jobs
    wall_max_s: float
    total_s: float
    gpu_hours: float
    peak_mem_mb: float
    runtime_min: int        # the SLURM request for the rule's longest job
    mem_mb: int


def bill(jobs: list[Job]) -> list[RuleBill]:
    """Jobs grouped per rule (in first-seen order): counts, wall times, GPU-hours, peak memory,
    and the request that covers the rule's longest and largest job."""
    rules: dict[str, list[Job]] = {}
    for j in jobs:
        rules.setdefault(j.rule, []).append(j)
    out = []
    for rule, js in rules.items():
        total = sum(j.wall_s for j in js)
        longest = max(j.wall_s for j in js)
        peak = max(j.mem_mb for j in js)
        runtime, mem = request(longest, peak)
        out.append(RuleBill(rule, len(js), total / len(js), longest, total,
                            sum(j.wall_s * j.gpus for j in js) / 3600, peak, runtime, mem))
    return out


# Jobs that run alone on a CPU: every later job needs them (data, tokenizer, the teacher), they
# take every core (teacher, benchmark), or they come last (report).
SERIAL_RULES = ("data", "tokenizer", "finetune", "benchmark", "report")


def cpu_wall_s(rules: list[RuleBill], cores: int) -> float:
    """Snakemake's wall time for a one-size grid on ``cores`` CPU cores: the serial rules one
    after another, every other job spread over the cores (it ignores that the last few jobs
    of a wave leave cores idle, so it is a lower bound)."""
    serial = sum(r.total_s for r in rules if r.rule in SERIAL_RULES)
    return serial + sum(r.total_s for r in rules if r.rule not in SERIAL_RULES) / cores


def relative_error(estimate: float, measured: float) -> float:
    """(estimate - measured) / measured: +0.25 = 25 % too long."""
    return (estimate - measured) / measured
