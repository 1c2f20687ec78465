"""Time generation of several variants of one model, interleaved (protocol: docs/benchmark.md).

One job times every variant of a size/dataset (or of a FLAN-T5 architecture), so that the
ratios it reports cannot be skewed by something that happened between two jobs:

  --model VARIANT=DIR ...        trained or pruned model folders (save_pretrained + tokenizer)
  --arch SIZE --variants e6d6 e3d6 ...
                                 the exact FLAN-T5 architecture cut to each depth, random
                                 weights (seeded), no training: every variant's speedup for free

Cells (each timed for every variant and engine): protocol x mode x batch size.
  fixed    min_new_tokens == max_new_tokens == new_tokens, asserted on every output: every
           variant decodes the same number of steps, so a latency ratio is an architecture ratio
  natural  EOS allowed, up to max_new_tokens (the paper's setting); the mean generated length is
           recorded, since a variant that stops earlier is faster for that reason alone
  engines  eager (transformers generate, dynamic cache), compiled (static cache and a
           torch.compile'd decoding step, asymprune.engine; greedy only) and ct2-<compute type>
           (CTranslate2, asymprune.ct2: the model's export, --ct2-model VARIANT=DIR, or with
           --arch an export made here; quantized to the compute type when loaded, with as many
           threads as torch)
  protocol paper (greedy, the configured batch sizes) and, with nash_protocol, NASH's own
           setting: beam search 4, batch 32, natural length, eager (labelled "nash")

Inputs (``inputs``): ``real`` (default, the paper's protocol) takes test documents, truncates
each to source_tokens and pads a batch to its longest document; each timed round uses another
batch (round r takes documents r*b .. r*b+b-1), so natural mode at batch 1 averages over
``runs`` documents. ``repeated`` repeats each document to exactly source_tokens (architecture
studies: every row costs the encoder the same). ``--arch`` models get random tokens of exactly
source_tokens (fixed mode only: random weights have no natural length).

Timing: warm-up runs per (variant, engine) first (the compiled engine compiles there), then
``runs`` rounds; round r times every (variant, engine) pair once, in an order rotated by r
(pair i goes at position (i - r) mod P), so slow drift of the machine hits all variants and
engines alike. Peak memory is recorded per (variant, engine): the most any one timed run added
on top of what was resident before it (CUDA: torch's allocator, so not for CTranslate2, which
allocates outside it; CPU: the process's resident set, VmHWM after glibc's malloc_trim and a
reset through /proc/self/clear_refs; elsewhere a lower bound). On CUDA the device is
synchronized before the clock starts and stops. A cell is flagged ``disturbed`` when the spread
(max - min) / median of its runs' time per decoding step exceeds ``max_spread`` (natural mode
stops each document after other lengths; see ``summarize``) or when other processes used more than
``max_foreign_load`` of the CPU time of the CPUs this job may run on (``os.sched_getaffinity``;
/proc/stat per CPU, minus this process); the report marks flagged cells and never plots them.

  python -m asymprune.benchmark --arch small --variants e6d6 e6d3 e6d1 --device cuda \\
      --output-dir bench_arch/cuda/small
  python -m asymprune.benchmark --model e6d6=results/demo/models/tiny/news/e6d6/model \\
      --model e6d3=results/demo/models/tiny/news/e6d3/model \\
      --data-file results/demo/data/news/test.jsonl --size tiny --dataset news \\
      --device cpu --output-dir bench/cpu/tiny/news
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from asymprune import settings
from asymprune.artifacts import read_jsonl
from asymprune.engine import generate_with
from asymprune.flan_t5 import SIZES, flan_t5_config
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.modeling import (DTYPES, count_parameters, load_model, load_tokenizer,
                                meta_model, resolve_device, weight_bytes)
from asymprune.provenance import make_sidecar, read_json, write_json
from asymprune.variants import parse, parse_depth, sort

log = logging.getLogger("asymprune.benchmark")

# NASH's latency setting (Ko et al., section 5.1): beam search with 4 beams at batch 32
NASH_BEAMS, NASH_BATCH = 4, 32


def _variant_dir(text: str) -> tuple[str, Path]:
    variant, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected VARIANT=DIR, got {text!r}")
    try:
        parse(variant)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return variant, Path(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asymprune.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("models (--model ... or --arch with --variants)")
    src.add_argument("--model", type=_variant_dir, action="append", default=[],
                     metavar="VARIANT=DIR", help="a model folder and its variant id; repeat")
    src.add_argument("--arch", choices=SIZES,
                     help="architecture-only: exact FLAN-T5 config of this size, random weights")
    src.add_argument("--variants", nargs="+", help="with --arch: the depths e{E}d{D} to build")
    src.add_argument("--layer-selection", default="auto", choices=SIXTHS_STRATEGIES,
                     help="with --arch: which rule turns sixths into a layer count (only the "
                          "count matters here; every rule gives floor(n * s / 6))")
    src.add_argument("--seed", type=int, default=0,
                     help="seed of the random weights (--arch) and random input tokens")
    lab = p.add_argument_group("labels copied to the top level of each output JSON")
    lab.add_argument("--size", help="model size label (with --arch: defaults to --arch)")
    lab.add_argument("--dataset", help="dataset label (none for --arch)")
    lab.add_argument("--device-label",
                     help="device label for paths and tables, e.g. a10, h100, cpu "
                          "(default: the device, cpu or cuda)")
    inp = p.add_argument_group("inputs")
    inp.add_argument("--data-file", type=Path,
                     help='JSONL rows {"id", "source", "target"}; sources are tokenized with '
                          "the models' tokenizer (needs --model). Without it, inputs are random "
                          "tokens (fixed mode only)")
    src.add_argument("--ct2-model", type=_variant_dir, action="append", default=[],
                     metavar="VARIANT=DIR",
                     help="with --model and a ct2-* engine: the variant's CTranslate2 export "
                          "(python -m asymprune.ct2); repeat")
    run = p.add_argument_group("run")
    run.add_argument("--threads", type=int, default=0,
                     help="torch CPU threads (0 = leave torch's default); recorded either way")
    p.add_argument("--output-dir", type=Path, required=True,
                   help="one <variant>.json per variant is written here")
    settings.add_arguments(p, settings.Benchmark, "protocol (asymprune.settings.Benchmark; with "
                                                  "--arch, modes defaults to fixed only)")
    args = p.parse_args(argv)
    modes_given = hasattr(args, "modes")
    settings.resolve(settings.Benchmark, args, p)

    if bool(args.model) == (args.arch is not None):
        p.error("give exactly one of --model VARIANT=DIR ... or --arch SIZE")
    if args.arch is not None:
        if not args.variants:
            p.error("--arch needs --variants e{E}d{D} ... (the depths to build)")
        for v in args.variants:
            try:
                parse_depth(v)
            except ValueError as e:
                p.error(f"--variants: {e}")
        if args.size is not None and args.size != args.arch:
            p.error(f"--size {args.size!r} contradicts --arch {args.arch!r}")
        args.size = args.arch
        if args.data_file is not None:
            p.error("--data-file needs --model (an --arch model has no tokenizer)")
        if args.ct2_model:
            p.error("--ct2-model goes with --model; --arch models are exported here")
        if args.dataset is not None:
            p.error("--dataset makes no sense with --arch (random weights, no data)")
        if not modes_given:
            # random weights have no natural length: only fixed mode applies to an architecture
            args.modes = ["fixed"]
        args.nash_protocol = False  # beam search over random weights measures nothing real
    else:
        if args.variants:
            p.error("--variants goes with --arch; with --model the variant is in VARIANT=DIR")
        names = [v for v, _ in args.model]
        if len(set(names)) != len(names):
            p.error(f"--model: a variant is given twice in {names}")
        for v, path in args.model:
            if not (path / "config.json").is_file():
                p.error(f"--model {v}={path}: no config.json there")
        ct2_dirs = dict(args.ct2_model)
        if any(e.startswith("ct2-") for e in args.engines):
            missing = [v for v in names if v not in ct2_dirs]
            if missing:
                p.error(f"--engines {args.engines} has a ct2-* engine: give --ct2-model "
                        f"VARIANT=DIR for {missing}")
        elif ct2_dirs:
            p.error("--ct2-model given, but --engines has no ct2-* engine")
        for v, path in args.ct2_model:
            if not (path / "model.bin").is_file():
                p.error(f"--ct2-model {v}={path}: no model.bin there")
    if ("natural" in args.modes or args.nash_protocol) and args.data_file is None:
        p.error("natural mode and the NASH protocol need --data-file: when a model stops "
                "depends on real inputs (and random weights have no natural length)")
    if args.data_file is not None and not args.data_file.is_file():
        p.error(f"--data-file {args.data_file} does not exist")
    return args


# ---------------------------------------------------------------------------------------------
# inputs


def device_name(device: torch.device) -> str:
    """What the timings were measured on, e.g. 'NVIDIA A10' or the CPU model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # A descriptive label, not a measurement: platform's name is the next best thing.
    return platform.processor() or platform.machine() or "cpu"


def build_arch_model(size: str, variant: str, strategy: str, seed: int,
                     device: torch.device, dtype: str):
    """FLAN-T5 ``size`` at depth ``variant`` with seeded random weights, built on ``device``."""
    from transformers import T5ForConditionalGeneration

    config = flan_t5_config(size, variant, strategy)
    torch.manual_seed(seed)
    with torch.device(device):  # built in place: no 3 GB host copy for large on a GPU
        model = T5ForConditionalGeneration(config)
        # Real FLAN-T5 checkpoints load with an lm_head of their own (T5Config in
        # transformers 5 ties it to the embedding): give it one, so memory traffic matches.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model.to(DTYPES[dtype]).eval()


def fit_length(ids: list[int], n_tokens: int, eos_id: int) -> list[int]:
    """Exactly ``n_tokens`` ids ending in EOS (the ``repeated`` inputs).

    A long source is cut to its first n - 1 tokens; a short one is repeated end to end until
    n - 1 tokens (e.g. 300 tokens, n = 1024: 3 full copies + the first 122 tokens = 1023);
    then EOS. Every position is a real token with attention mask 1.
    """
    if not ids:
        raise ValueError("cannot fit an empty token sequence")
    body = list(itertools.islice(itertools.cycle(ids), n_tokens - 1))
    return body + [eos_id]


def truncate(ids: list[int], n_tokens: int, eos_id: int) -> list[int]:
    """The ``real`` inputs: a document's tokens cut to n, still ending in EOS, as the
    tokenizer's truncation does (a 374-token XSUM document stays 374 tokens long)."""
    if not ids:
        raise ValueError("cannot use an empty token sequence")
    return ids[: n_tokens - 1] + [eos_id] if len(ids) >= n_tokens else ids + [eos_id]


def sources_from_file(path: Path, tokenizer, n_tokens: int, inputs: str) -> list[list[int]]:
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"--data-file {path} has no rows")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the model's tokenizer has no EOS token")
    out = []
    for i, row in enumerate(rows):
        if "source" not in row:
            raise ValueError(f"--data-file {path} row {i} has no 'source' field")
        ids = tokenizer(row["source"], add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"--data-file {path} row {i} (id {row.get('id')!r}) tokenizes to "
                             f"nothing")
        out.append(fit_length(ids, n_tokens, eos) if inputs == "repeated"
                   else truncate(ids, n_tokens, eos))
    return out


def random_sources(vocab_size: int, n_tokens: int, count: int, seed: int,
                   eos_id: int) -> list[list[int]]:
    """Seeded random ids in [2, vocab): 0 is pad and 1 is EOS in every T5 vocabulary."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(2, vocab_size, (count, n_tokens - 1), generator=g)
    return [row + [eos_id] for row in body.tolist()]


def make_batches(sources: list[list[int]], batch_size: int, count: int, pad_id: int,
                 device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches; batch j holds sources j*b .. j*b+b-1 (cycling through the file),
    right-padded to its longest source with attention mask 0 on the padding."""
    batches = []
    for j in range(count):
        rows = [sources[(j * batch_size + i) % len(sources)] for i in range(batch_size)]
        width = max(map(len, rows))
        ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        batches.append((ids.to(device), mask.to(device)))
    return batches


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


# ---------------------------------------------------------------------------------------------
# timing


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

    def gen_kwargs(self, args) -> dict:
        if self.mode == "fixed":
            kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        else:
            kw = dict(max_new_tokens=args.max_new_tokens)
        kw["use_cache"] = True
        if self.num_beams > 1:
            kw["num_beams"] = self.num_beams
        return kw


def cells(args) -> list[Cell]:
    out = [Cell("paper", mode, tuple(args.engines), bs, 1)
           for mode in args.modes for bs in args.batch_sizes]
    if args.nash_protocol:
        out.append(Cell("nash", "natural", ("eager",), NASH_BATCH, NASH_BEAMS))
    return out


def summarize(times_ms: list[float], counts: list[int], steps: list[int],
              foreign: float | None, load_before: float, args) -> dict:
    """Statistics of one variant's timed runs in a cell, and whether they look disturbed.

    ``steps``: the decoding steps each run paid for (its longest row). The spread that flags a
    disturbed cell is that of the time per decoding step, (max - min) / median of ms / steps:
    in fixed mode every run decodes the same steps, so it is the spread of the times; in
    natural mode each round times other documents, which stop after other numbers of tokens
    (e.g. 30 vs 45 steps: 1.5x the time), and that is the documents, not interference.
    """
    median = statistics.median(times_ms)
    per_step = [t / n for t, n in zip(times_ms, steps)]
    step_median = statistics.median(per_step)
    spread = (max(per_step) - min(per_step)) / step_median
    why = []
    if spread > args.max_spread:
        why.append(f"spread {spread:.2f} > {args.max_spread}")
    if foreign is not None and foreign > args.max_foreign_load:
        why.append(f"foreign load {foreign:.2f} > {args.max_foreign_load}")
    return {
        "mean_ms": statistics.fmean(times_ms),
        "std_ms": statistics.stdev(times_ms),  # sample std (n - 1), as over the paper's 7 runs
        "median_ms": median, "min_ms": min(times_ms), "max_ms": max(times_ms),
        "runs_ms": times_ms, "runs_steps": steps, "ms_per_step_median": step_median,
        "spread": spread, "foreign_load": foreign,
        "load_avg_1m_before": load_before,
        "disturbed": bool(why), "disturbed_why": why,
        "new_tokens_mean": statistics.fmean(counts),   # per row, EOS included
        "new_tokens_max": max(counts),
    }


def time_cell(decoders: dict[tuple[str, str], object], cell: Cell, batches: list, args,
              eos_id: int, device: torch.device) -> dict[tuple[str, str], dict]:
    """Warm-up, then ``runs`` rounds, each timing every (variant, engine) of ``decoders``
    whose engine is one of the cell's, in an order rotated by the round; stats per pair.

    ``decoders[(variant, engine)]`` is what ``generate_with(engine, ...)`` decodes with: the
    torch model for eager and compiled, a loaded ``asymprune.ct2.Ct2Model`` for ct2-*.
    """
    gen_kwargs = cell.gen_kwargs(args)
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
        if cell.mode == "fixed" and (out.shape[1] - 1 != args.new_tokens
                                     or any(c != args.new_tokens for c in counts)):
            raise AssertionError(f"fixed mode, {pair[1]}: expected exactly {args.new_tokens} "
                                 f"new tokens per row, got width {out.shape[1] - 1} and per-row "
                                 f"{counts}")
        return elapsed, counts, added

    gc.collect()
    # The compiled engine compiles once per input shape: warm every distinct shape up, so that
    # no compilation lands in a timed run.
    shapes = {tuple(b[0].shape): b for b in batches}
    warm = [batches[i % len(batches)] for i in range(args.warmup)]
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
    for r in range(args.runs):
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
        stats[pair] = summarize(times[pair], counts[pair], steps[pair], foreign, load_before,
                                args)
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


# ---------------------------------------------------------------------------------------------
# the stage


def load_decoders(models: dict, args, device: torch.device
                  ) -> tuple[dict[tuple[str, str], object], dict[str, dict]]:
    """What each (variant, engine) decodes with, every one resident at once, and per variant
    what its CTranslate2 export padded. ``--arch`` models are exported here (with an
    ``IdVocabulary``: they have no tokenizer); ``--model`` variants use ``--ct2-model``."""
    engines = list(dict.fromkeys(args.engines + (["eager"] if args.nash_protocol else [])))
    decoders: dict[tuple[str, str], object] = {}
    info: dict[str, dict] = {}
    ct2_engines = [e for e in engines if e.startswith("ct2-")]
    if ct2_engines:
        from asymprune import ct2

        ct2_dirs = dict(args.ct2_model)
        with tempfile.TemporaryDirectory() as tmp:
            for v, model in models.items():
                if args.arch is not None:
                    folder = Path(tmp) / v
                    info[v] = ct2.export_model(model, ct2.IdVocabulary(model.config.vocab_size),
                                               folder)
                else:
                    folder = ct2_dirs[v]
                    side = read_json(folder / "sidecar.json")
                    info[v] = {k: side.get(k) for k in ("padded_heads", "padded_ffn_units",
                                                        "ctranslate2")}
                for e in ct2_engines:
                    # loaded into memory here: the temporary export may go afterwards
                    decoders[(v, e)] = ct2.Ct2Model(folder, ct2.compute_type(e), device.type,
                                                    torch.get_num_threads())
    for v, model in models.items():
        for e in engines:
            if not e.startswith("ct2-"):
                decoders[(v, e)] = model
    # variant-major, engines in the order given: the first round's order
    order = {e: i for i, e in enumerate(engines)}
    return dict(sorted(decoders.items(), key=lambda kv: (list(models).index(kv[0][0]),
                                                         order[kv[0][1]]))), info


def print_cell(cell: Cell, stats: dict[tuple[str, str], dict]) -> None:
    """One line per (variant, engine): median ms and the ratio to the variant's eager time."""
    for (v, engine), s in stats.items():
        eager = stats.get((v, "eager"))
        ratio = f" {eager['median_ms'] / s['median_ms']:.2f}x eager" if eager else ""
        mem = (f", peak +{s['peak_memory_mb']:.0f} MiB" if s["peak_memory_mb"] is not None
               else "")
        log.info("%s %s bs=%d %s %s: median %.1f ms%s (spread %.2f%s)%s", cell.protocol,
                 cell.mode, cell.batch_size, v, engine, s["median_ms"], ratio, s["spread"],
                 mem, " DISTURBED: " + "; ".join(s["disturbed_why"]) if s["disturbed"] else "")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    if device.type == "cuda":
        # sized on the meta device: shapes only, nothing read or allocated
        if args.arch is not None:
            metas = {v: build_arch_model(args.arch, v, args.layer_selection, args.seed,
                                         torch.device("meta"), args.dtype) for v in args.variants}
        else:
            metas = {v: meta_model(path, args.dtype) for v, path in args.model}
        check_fits({v: weight_bytes(m) for v, m in metas.items()},
                   torch.cuda.mem_get_info(device)[0],
                   f"benchmark of {args.size}/{args.dataset}" if args.dataset
                   else f"architecture-only benchmark of {args.size}", args.dtype)
    if args.arch is not None:
        models = {v: build_arch_model(args.arch, v, args.layer_selection, args.seed, device,
                                      args.dtype) for v in sort(args.variants)}
        tokenizer = None
    else:
        # every variant resident at once: the rounds alternate between them (check_fits above
        # stops a job whose weights cannot fit)
        paths = dict(args.model)
        models = {v: load_model(paths[v], args.dtype).to(device).eval() for v in sort(paths)}
        tokenizer = load_tokenizer(paths[next(iter(models))])
    first = next(iter(models.values())).config
    eos_id, pad_id = first.eos_token_id, first.pad_token_id
    if not isinstance(eos_id, int) or not isinstance(pad_id, int):
        raise ValueError(f"model config eos/pad token ids must be ints, got {eos_id!r}, "
                         f"{pad_id!r}")
    for v, m in models.items():
        if (m.config.eos_token_id, m.config.pad_token_id) != (eos_id, pad_id):
            raise ValueError(f"variant {v} has other special tokens than {next(iter(models))}: "
                             f"its outputs are not comparable")

    if args.data_file is not None:
        sources = sources_from_file(args.data_file, tokenizer, args.source_tokens, args.inputs)
        inputs = args.inputs
    else:
        # Fixed mode only: the content of the input does not change the amount of work.
        sources = random_sources(first.vocab_size, args.source_tokens,
                                 max(args.batch_sizes) * args.runs, args.seed, eos_id)
        inputs = "random"

    decoders, ct2_info = load_decoders(models, args, device)
    results = {v: [] for v in models}
    for cell in cells(args):
        # one batch per timed round: `runs` different groups of documents per batch size
        batches = make_batches(sources, cell.batch_size, args.runs, pad_id, device)
        source_tokens_mean = statistics.fmean(float(m.sum()) / m.shape[0] for _, m in batches)
        stats = time_cell(decoders, cell, batches, args, eos_id, device)
        for (v, engine), s in stats.items():
            results[v].append({"protocol": cell.protocol, "mode": cell.mode,
                               "engine": engine, "inputs": inputs,
                               "batch_size": cell.batch_size, "num_beams": cell.num_beams,
                               "source_tokens_mean": source_tokens_mean, **s})
        print_cell(cell, stats)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    wall = time.time() - start
    for v, model in models.items():
        cfg = model.config
        write_json(args.output_dir / f"{v}.json", make_sidecar(
            "benchmark", vars(args),
            samples={"warmup_runs": args.warmup, "timed_runs": args.runs,
                     "cells": len(results[v]), "distinct_sources": len(sources)},
            wall_time_s=wall,
            size=args.size, dataset=args.dataset, variant=v,
            timed_with=list(models),
            device_label=args.device_label or device.type,
            device_name=device_name(device),
            model_source="arch" if args.arch is not None else "model",
            inputs=inputs,
            source_tokens=args.source_tokens,
            dtype=args.dtype,
            torch_threads=torch.get_num_threads(),
            load_avg_1m_end=os.getloadavg()[0],
            params=count_parameters(model),
            # what each CTranslate2 export padded back to full width (NASH encoders): padded
            # heads keep their compute on ct2-* engines
            ct2_export=ct2_info.get(v),
            encoder_layers=cfg.num_layers,
            decoder_layers=cfg.num_decoder_layers,
            results=results[v],
        ))
    log.info("wrote %d files to %s", len(models), args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
