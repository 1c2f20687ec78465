"""Time greedy generation of a model at several batch sizes (protocol: DESIGN.md section 5).

Two sources of models:
  --model DIR                  a trained or pruned model folder (save_pretrained + tokenizer)
  --arch SIZE --variant e3d6   the exact FLAN-T5 architecture cut to that depth, random weights
                               (seeded), no training: the speedup of every variant for free

Two modes, each timed at every batch size:
  fixed    min_new_tokens == max_new_tokens == --new-tokens, asserted on every output: every
           variant decodes the same number of steps, so the ratio of latencies is the ratio
           of architecture cost
  natural  EOS allowed, up to --max-new-tokens (the paper's setting); the mean generated length
           is recorded, since a variant that stops earlier is faster for that reason alone

Per configuration: --warmup untimed runs, then --runs timed runs of one ``generate`` call on the
same batch; on CUDA the device is synchronized before the clock starts and before it stops, so
a run's time covers all of its kernels. Reported: mean, sample std and median in ms per batch.

  python -m asymprune.benchmark --arch small --variant e6d1 --device cuda --output e6d1.json
  python -m asymprune.benchmark --model results/demo/models/tiny/xsum/e6d6/model \\
      --data-file results/demo/data/xsum/test.jsonl --size tiny --dataset xsum --variant e6d6 \\
      --device cpu --output bench.json
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from asymprune.artifacts import read_jsonl
from asymprune.flan_t5 import SIZES, flan_t5_config
from asymprune.generation import generate
from asymprune import settings
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.variants import parse_depth
from asymprune.modeling import (DTYPES, count_parameters, load_model, load_tokenizer,
                                resolve_device)
from asymprune.provenance import make_sidecar, write_json

log = logging.getLogger("asymprune.benchmark")



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asymprune.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model (exactly one of --model / --arch)")
    src.add_argument("--model", type=Path, help="model folder written by save_pretrained")
    src.add_argument("--arch", choices=SIZES,
                     help="architecture-only: exact FLAN-T5 config of this size, random weights")
    src.add_argument("--layer-selection", default="auto", choices=SIXTHS_STRATEGIES,
                     help="with --arch: which rule turns sixths into a layer count (only the "
                          "count matters here; every rule gives floor(n * s / 6))")
    src.add_argument("--seed", type=int, default=0,
                     help="seed of the random weights (--arch) and random input tokens")

    lab = p.add_argument_group("labels copied to the top level of the output JSON")
    lab.add_argument("--size", help="model size label (with --arch: defaults to --arch)")
    lab.add_argument("--dataset", help="dataset label (none for --arch)")
    lab.add_argument("--variant", help="variant label, e.g. e6d6, e3d6, nash-d3; with --arch "
                                       "it is required and sets the depth (e{E}d{D})")
    lab.add_argument("--device-label",
                     help="device label for paths and tables, e.g. a10, h100, cpu "
                          "(default: the torch device type, cpu or cuda)")

    inp = p.add_argument_group("inputs")
    inp.add_argument("--data-file", type=Path,
                     help='JSONL rows {"id", "source", "target"}; sources are tokenized with '
                          "the model's tokenizer (needs --model). Without it, inputs are random "
                          "tokens (fixed mode only)")
    run = p.add_argument_group("run")
    run.add_argument("--threads", type=int, default=0,
                     help="torch CPU threads (0 = leave torch's default); recorded either way")
    settings.add_arguments(p, settings.Benchmark, "protocol (asymprune.settings.Benchmark; with "
                                                  "--arch, modes defaults to fixed only)")

    p.add_argument("--output", type=Path, required=True, help="output JSON path")
    args = p.parse_args(argv)
    modes_given = hasattr(args, "modes")
    settings.resolve(settings.Benchmark, args, p)

    if (args.model is None) == (args.arch is None):
        p.error("give exactly one of --model DIR or --arch SIZE")
    if args.arch is not None:
        if args.variant is None:
            p.error("--arch needs --variant e{E}d{D} (the depth to build)")
        try:
            parse_depth(args.variant)
        except ValueError as e:
            p.error(f"--variant: {e}")
        if args.size is not None and args.size != args.arch:
            p.error(f"--size {args.size!r} contradicts --arch {args.arch!r}")
        args.size = args.arch
        if args.data_file is not None:
            p.error("--data-file needs --model (an --arch model has no tokenizer)")
        if args.dataset is not None:
            p.error("--dataset makes no sense with --arch (random weights, no data)")
    if args.arch is not None and not modes_given:
        # random weights have no natural length: only fixed mode applies to an architecture
        args.modes = ["fixed"]
    if "natural" in args.modes and args.data_file is None:
        p.error("natural mode needs --data-file: when a model stops depends on real inputs "
                "(and random weights have no natural length)")
    if args.model is not None and not (args.model / "config.json").is_file():
        p.error(f"--model {args.model}: no config.json there")
    if args.data_file is not None and not args.data_file.is_file():
        p.error(f"--data-file {args.data_file} does not exist")
    return args


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
    """Exactly ``n_tokens`` ids ending in EOS, like a real (truncated) T5 input.

    A long source is cut to its first n - 1 tokens; a short one is repeated end to end until
    n - 1 tokens (e.g. 300 tokens, n = 1024: 3 full copies + the first 122 tokens = 1023);
    then EOS. Repeating instead of padding keeps every position a real token with attention
    mask 1, so every row costs the encoder the same n tokens as in the paper's 1024-token setup.
    """
    if not ids:
        raise ValueError("cannot fit an empty token sequence")
    body = list(itertools.islice(itertools.cycle(ids), n_tokens - 1))
    return body + [eos_id]


def sources_from_file(path: Path, tokenizer, n_tokens: int) -> list[list[int]]:
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
        out.append(fit_length(ids, n_tokens, eos))
    return out


def random_sources(vocab_size: int, n_tokens: int, count: int, seed: int,
                   eos_id: int) -> list[list[int]]:
    """Seeded random ids in [2, vocab): 0 is pad and 1 is EOS in every T5 vocabulary."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(2, vocab_size, (count, n_tokens - 1), generator=g)
    return [row + [eos_id] for row in body.tolist()]


def make_batch(sources: list[list[int]], batch_size: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch_size`` sources in file order (cycled if there are fewer)."""
    rows = [sources[i % len(sources)] for i in range(batch_size)]
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    return ids, torch.ones_like(ids)


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


def time_config(model, ids: torch.Tensor, mask: torch.Tensor, gen_kwargs: dict, *, mode: str,
                new_tokens: int, eos_id: int, warmup: int, runs: int,
                device: torch.device) -> dict:
    """Warm-up, then timed runs of one batch; returns latency stats and generated lengths."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()[0]
    times_ms: list[float] = []
    counts: list[int] = []
    for i in range(warmup + runs):
        _sync(device)
        t0 = time.perf_counter()
        out = generate(model, ids, mask, **gen_kwargs)
        _sync(device)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        row_counts = new_token_counts(out, eos_id)
        if mode == "fixed" and (out.shape[1] - 1 != new_tokens
                                or any(c != new_tokens for c in row_counts)):
            raise AssertionError(f"fixed mode: expected exactly {new_tokens} new tokens per row, "
                                 f"got output width {out.shape[1] - 1} and per-row {row_counts}")
        if i >= warmup:
            times_ms.append(elapsed_ms)
            counts.extend(row_counts)
    return {
        "mean_ms": statistics.fmean(times_ms),
        "std_ms": statistics.stdev(times_ms),  # sample std (n - 1), as over the paper's 7 runs
        "median_ms": statistics.median(times_ms),
        "runs_ms": times_ms,
        "new_tokens_mean": statistics.fmean(counts),
        "new_tokens_max": max(counts),  # the decoding steps the whole batch paid for
        "load_avg_1m_before": load_before,
        "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                           if device.type == "cuda" else None),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    if args.arch is not None:
        model = build_arch_model(args.arch, args.variant, args.layer_selection, args.seed,
                                 device, args.dtype)
        tokenizer = None
    else:
        model = load_model(args.model, args.dtype).to(device).eval()
        tokenizer = load_tokenizer(args.model) if args.data_file is not None else None
    cfg = model.config
    eos_id = cfg.eos_token_id
    if not isinstance(eos_id, int):
        raise ValueError(f"model config eos_token_id must be one int, got {eos_id!r}")

    if args.data_file is not None:
        sources = sources_from_file(args.data_file, tokenizer, args.source_tokens)
        inputs = "data-file"
    else:
        # Fixed mode only: the content of the input does not change the amount of work.
        sources = random_sources(cfg.vocab_size, args.source_tokens, max(args.batch_sizes),
                                 args.seed, eos_id)
        inputs = "random"

    results = []
    for mode in args.modes:
        if mode == "fixed":
            gen_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        else:
            gen_kwargs = dict(max_new_tokens=args.max_new_tokens)
        gen_kwargs["use_cache"] = True
        for bs in args.batch_sizes:
            ids, mask = make_batch(sources, bs, device)
            stats = time_config(model, ids, mask, gen_kwargs, mode=mode,
                                new_tokens=args.new_tokens, eos_id=eos_id, warmup=args.warmup,
                                runs=args.runs, device=device)
            log.info("%s bs=%d: %.1f +- %.1f ms (median %.1f), %.1f new tokens", mode, bs,
                     stats["mean_ms"], stats["std_ms"], stats["median_ms"],
                     stats["new_tokens_mean"])
            results.append({"mode": mode, "batch_size": bs, **stats})

    sidecar = make_sidecar(
        "benchmark", vars(args),
        samples={"warmup_runs": args.warmup, "timed_runs": args.runs,
                 "configurations": len(results), "distinct_sources": len(sources)},
        wall_time_s=time.time() - start,
        size=args.size, dataset=args.dataset, variant=args.variant,
        device_label=args.device_label or device.type,
        device_name=device_name(device),
        model_source="arch" if args.arch is not None else "model",
        inputs=inputs,
        source_tokens=args.source_tokens,
        dtype=args.dtype,
        torch_threads=torch.get_num_threads(),
        load_avg_1m_end=os.getloadavg()[0],
        params=count_parameters(model),
        encoder_layers=cfg.num_layers,
        decoder_layers=cfg.num_decoder_layers,
        results=results,
    )
    write_json(args.output, sidecar)
    log.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
