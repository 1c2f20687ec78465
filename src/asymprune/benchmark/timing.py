"""Timing a cell: warm-up, then interleaved rounds in rotated order, /proc accounting of the
CPU time other processes used meanwhile, the memory each run added, and the statistics of the
runs (docs/benchmark.md, "Timing", "Statistics", "Memory")."""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from asymprune.engine import generate_with

# NASH's latency setting (Ko et al., section 5.1): beam search with 4 beams at batch 32
NASH_BEAMS, NASH_BATCH = 4, 32


def new_token_counts(output: torch.Tensor, eos_id: int) -> list[int]:
    """Tokens each row generated: up to and including its first EOS, else all of them.

    ``output`` is [batch, 1 + steps]: column 0 is the decoder start token; rows that finished
    early are padded after their EOS, which must not count.
    """
    gen = output[:, 1:]
    steps = gen.shape[1]
    counts = []
    for row in gen.tolist():
        counts.append(row.index(eos_id) + 1 if eos_id in row else steps)
    return counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (a SLURM job or taskset gets fewer than the machine)."""
    return set(os.sched_getaffinity(0))


def cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy ticks of ``cpus``, ticks of this process and its threads), or None where /proc is
    missing. Busy = user + nice + system + irq + softirq + steal, summed over the "cpuN" lines
    of /proc/stat for N in ``cpus``."""
    try:
        stat = Path("/proc/stat").read_text()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields after the ")" start at field 3 of proc(5): utime is field 14, stime 15
    return busy_ticks(stat, cpus), int(own[11]) + int(own[12])


def busy_ticks(stat: str, cpus: set[int]) -> int:
    """Busy ticks of ``cpus`` in the text of /proc/stat (its "cpuN" lines)."""
    busy = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        busy += user + nice + system + irq + softirq + steal
    return busy


# /proc/stat counts in ticks (USER_HZ, 100 per second): a window shorter than this many ticks
# of CPU time (e.g. 0.5 s on 2 CPUs = 100) cannot tell 10 % of foreign load from rounding
MIN_LOAD_TICKS = 100


def foreign_load(before: tuple[int, int] | None, after: tuple[int, int] | None,
                 wall_s: float, n_cpus: int) -> float | None:
    """Share of the CPU time of the ``n_cpus`` CPUs this job may use that other processes used
    in a window: (busy ticks of those CPUs - this process's ticks) / (wall x n_cpus x ticks per
    second). None where /proc is missing or the window is too short to tell."""
    if before is None or after is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    capacity = wall_s * n_cpus * hz
    if capacity < MIN_LOAD_TICKS:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, other / capacity))


def _status_bytes(field: str) -> int | None:
    """A "kB" line of /proc/self/status (VmRSS, VmHWM) in bytes; None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``): otherwise a
    run's buffers reuse pages an earlier run left resident and its peak does not show."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the peak is then a lower bound, as the docstring of the module says


def reset_peak_rss() -> int | None:
    """Reset the process's peak resident set (VmHWM) to its current size (writing 5 to
    /proc/self/clear_refs, Linux >= 4.0) and return that size; None where it cannot."""
    _malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_bytes("VmRSS")


def memory_before(device: torch.device) -> int | None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return reset_peak_rss()


def memory_added(device: torch.device, engine: str, before: int | None) -> float | None:
    """MiB one run added at its peak on top of ``before`` (``memory_before``); None where it
    cannot be known: CTranslate2 on CUDA allocates outside torch's allocator."""
    if before is None or (device.type == "cuda" and engine.startswith("ct2-")):
        return None
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else _status_bytes("VmHWM"))
    return None if peak is None else max(0, peak - before) / 2**20


@dataclass
class Cell:
    protocol: str        # paper | nash
    mode: str            # fixed | natural
    engines: tuple[str, ...]  # timed interleaved: every (variant, engine) once per round
    batch_size: int
    num_beams: int

    def gen_kwargs(self, b) -> dict:
        if self.mode == "fixed":
            kw = dict(max_new_tokens=b.new_tokens, min_new_tokens=b.new_tokens)
        else:
            kw = dict(max_new_tokens=b.max_new_tokens)
        kw["use_cache"] = True
        if self.num_beams > 1:
            kw["num_beams"] = self.num_beams
        return kw


def cells(b) -> list[Cell]:
    """The cells one job times, from its protocol settings (``asymprune.settings.Benchmark``)."""
    out = [Cell("paper", mode, tuple(b.engines), bs, 1)
           for mode in b.modes for bs in b.batch_sizes]
    if b.nash_protocol:
        out.append(Cell("nash", "natural", ("eager",), NASH_BATCH, NASH_BEAMS))
    return out


def summarize(times_ms: list[float], counts: list[int], steps: list[int],
              foreign: float | None, load_before: float) -> dict:
    """Statistics of one variant's timed runs in a cell: the fields of
    ``asymprune.records.BenchCell`` that the runs give. No verdict: the report judges the
    spread and the foreign load against its thresholds (docs/benchmark.md).

    ``steps``: the decoding steps each run paid for (its longest row). The spread is that of
    the time per decoding step, (max - min) / median of ms / steps: in fixed mode every run
    decodes the same steps, so it is the spread of the times; in natural mode each round times
    other documents, which stop after other numbers of tokens (e.g. 30 vs 45 steps: 1.5x the
    time), and that is the documents, not interference.
    """
    median = statistics.median(times_ms)
    per_step = [t / n for t, n in zip(times_ms, steps)]
    step_median = statistics.median(per_step)
    spread = (max(per_step) - min(per_step)) / step_median
    return {
        "mean_ms": statistics.fmean(times_ms),
        "std_ms": statistics.stdev(times_ms),  # sample std (n - 1), as over the paper's 7 runs
        "median_ms": median, "min_ms": min(times_ms), "max_ms": max(times_ms),
        "runs_ms": times_ms, "runs_steps": steps, "ms_per_step_median": step_median,
        "spread": spread, "foreign_load": foreign,
        "load_avg_1m_before": load_before,
        "new_tokens_mean": statistics.fmean(counts),   # per row, EOS included
        "new_tokens_max": max(counts),
    }


def time_cell(decoders: dict[tuple[str, str], object], cell: Cell, batches: list, b,
              eos_id: int, device: torch.device) -> dict[tuple[str, str], dict]:
    """Warm-up, then ``runs`` rounds, each timing every (variant, engine) of ``decoders``
    whose engine is one of the cell's, in an order rotated by the round; stats per pair.

    ``decoders[(variant, engine)]`` is what ``generate_with(engine, ...)`` decodes with: the
    torch model for eager and compiled, a loaded ``asymprune.ct2.Ct2Model`` for ct2-*.
    """
    gen_kwargs = cell.gen_kwargs(b)
    pairs = [key for key in decoders if key[1] in cell.engines]

    def run_once(pair, batch):
        ids, mask = batch
        _sync(device)
        mem = memory_before(device)
        t0 = time.perf_counter()
        out = generate_with(pair[1], decoders[pair], ids, mask, **gen_kwargs)
        _sync(device)
        elapsed = (time.perf_counter() - t0) * 1000.0
        added = memory_added(device, pair[1], mem)
        counts = new_token_counts(out, eos_id)
        if cell.mode == "fixed" and (out.shape[1] - 1 != b.new_tokens
                                     or any(c != b.new_tokens for c in counts)):
            raise AssertionError(f"fixed mode, {pair[1]}: expected exactly {b.new_tokens} "
                                 f"new tokens per row, got width {out.shape[1] - 1} and per-row "
                                 f"{counts}")
        return elapsed, counts, added

    gc.collect()
    # The compiled engine compiles once per input shape: warm every distinct shape up, so that
    # no compilation lands in a timed run.
    shapes = {tuple(b[0].shape): b for b in batches}
    warm = [batches[i % len(batches)] for i in range(b.warmup)]
    for pair in pairs:
        for batch in warm + (list(shapes.values()) if pair[1] == "compiled" else []):
            run_once(pair, batch)

    times = {p: [] for p in pairs}
    counts = {p: [] for p in pairs}
    steps = {p: [] for p in pairs}
    peaks = {p: [] for p in pairs}
    load_before = os.getloadavg()[0]
    cpus = usable_cpus()
    before, t0 = cpu_ticks(cpus), time.perf_counter()
    for r in range(b.runs):
        batch = batches[r % len(batches)]
        k = r % len(pairs)
        for pair in pairs[k:] + pairs[:k]:  # rotated: pair i at (i - r) mod P
            elapsed, row_counts, added = run_once(pair, batch)
            times[pair].append(elapsed)
            counts[pair].extend(row_counts)
            # the steps the batch paid for: its longest row (generation stops after the last
            # row's EOS or at the length limit, and the output is that wide)
            steps[pair].append(max(row_counts))
            peaks[pair].append(added)
    foreign = foreign_load(before, cpu_ticks(cpus), time.perf_counter() - t0, len(cpus))
    stats = {}
    for pair in pairs:
        stats[pair] = summarize(times[pair], counts[pair], steps[pair], foreign, load_before)
        known = [m for m in peaks[pair] if m is not None]
        # the most one timed run of this variant and engine added on top of what was resident
        stats[pair]["peak_memory_mb"] = max(known) if known else None
        stats[pair]["peak_memory_of"] = (None if not known else "cuda_allocated"
                                         if device.type == "cuda" else "rss")
    return stats


def check_fits(need: dict[str, int], free: int, what: str, dtype: str) -> None:
    """Stop before any model is loaded when the weights of all the variants one job keeps
    resident cannot fit in the GPU's free memory: a CUDA out-of-memory error halfway through
    loading would say less. FLAN-T5-large in fp32: e6d6 2.9 GiB, its 16 depth variants 33.3
    GiB, with NASH-2/3/4 and three baselines up to 45.5 GiB (``weight_bytes`` of the meta
    models): more than a 40 GB GPU holds. Only the weights are counted (inputs, KV
    caches and activations come on top), so passing this check does not promise the run fits;
    failing it means it cannot."""
    total = sum(need.values())
    if total <= free:
        return
    biggest = ", ".join(f"{v} {b / 2**30:.1f}" for v, b in
                        sorted(need.items(), key=lambda kv: -kv[1])[:3])
    raise RuntimeError(
        f"{what}: the {len(need)} models timed interleaved (every one resident at once) need "
        f"{total / 2**30:.1f} GiB of {dtype} weights (largest: {biggest} GiB), but the GPU has "
        f"{free / 2**30:.1f} GiB free. Time them on a GPU with more memory, set "
        f"benchmark.dtype: bf16 (half the bytes), or benchmark fewer variants (config keys "
        f"variants, nash, baselines).")
