"""Eager vs compiled greedy generation on the FLAN-T5 architecture, every depth variant.

    .venv/bin/python bench/engine_speed.py                      # 1024 source tokens, 64 new
    .venv/bin/python bench/engine_speed.py --source-tokens 512 --new-tokens 32 --runs 3 \
        --json reports/engine_speed.json

Random weights with the FLAN-T5 shapes (``asymprune.flan_t5.flan_t5_config``, untied lm_head),
random source ids of exactly --source-tokens tokens (mask all ones), fixed-length decoding
(min_new_tokens == max_new_tokens, so both engines pay for the same number of steps). Per
variant and engine: warm-up calls first (the compiled engine compiles its step in the first
one; that call's time is reported as "first call"), then --runs rounds, each timing every
(variant, engine) once, in an order rotated by one each round so that drift in machine load
spreads over all of them; each round also times the encoder alone, which both engines run the
same way, so "decoding only" = (total - encoder) compares the part the engines differ in. The
compiled output is checked against the eager tokens (exit status 1 if they differ).

Noisy neighbours: on a 2-core machine another busy process makes 2-thread OpenMP kernels wait
on each other (10x slower calls were seen); check the load averages printed before and after,
or pass --threads 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from asymprune.benchmark.inputs import build_arch_model
from asymprune.benchmark.stage import device_name
from asymprune.engine import generate_with
from asymprune.flan_t5 import SIZES
from asymprune.layers import SIXTHS_STRATEGIES

VARIANTS = ("e6d6", "e6d3", "e6d1", "e3d6", "e1d6", "e3d3", "e1d1")
# the two torch engines; CTranslate2 is timed by asymprune.benchmark (--engines ct2-...)
ENGINES = ("eager", "compiled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--layer-selection", default="auto", choices=SIXTHS_STRATEGIES,
                   help="block selection (the workflow's layer_selection)")
    p.add_argument("--source-tokens", type=int, default=1024)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--runs", type=int, default=5, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per config (>= 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be >= 1: the compiled engine compiles in its first call")
    if args.runs < 1 or args.source_tokens < 2 or args.new_tokens < 1:
        p.error("--runs >= 1, --source-tokens >= 2 and --new-tokens >= 1 are required")
    return args


def random_batch(vocab: int, n_tokens: int, batch: int, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ids in [2, vocab) ending in EOS (1): 0 is pad, 1 EOS in every T5 vocabulary."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, n_tokens), generator=g)
    ids[:, -1] = 1
    return ids.to(device), torch.ones_like(ids, device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(engine: str, model, ids, mask, new_tokens: int, device) -> tuple[float, torch.Tensor]:
    _sync(device)
    t0 = time.perf_counter()
    out = generate_with(engine, model, ids, mask, max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens)
    _sync(device)
    ms = (time.perf_counter() - t0) * 1000.0
    if out.shape[1] != 1 + new_tokens:
        raise AssertionError(f"{engine}: fixed length {new_tokens} gave width {out.shape[1] - 1}")
    return ms, out


def timed_encoder(model, ids, mask, device) -> float:
    """The encoder alone: both engines run it the same way (eagerly), once per call."""
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        model.get_encoder()(input_ids=ids, attention_mask=mask)
        _sync(device)
    return (time.perf_counter() - t0) * 1000.0


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = {"cpu_or_gpu": device_name(device), "torch": torch.__version__,
           "transformers": transformers.__version__, "threads": torch.get_num_threads(),
           "load_avg_1m_before": os.getloadavg()[0]}
    print(f"# device: {env['cpu_or_gpu']} | torch {env['torch']} | transformers "
          f"{env['transformers']} | threads {env['threads']} | load avg 1m before "
          f"{env['load_avg_1m_before']:.2f}", flush=True)

    # FLAN-T5 shapes, seeded random fp32 weights, an untied lm_head as real checkpoints have
    models = {v: build_arch_model(args.size, v, args.layer_selection, args.seed, device, "fp32")
              for v in args.variants}
    vocab = next(iter(models.values())).config.vocab_size
    results = []
    for bs in args.batch_sizes:
        ids, mask = random_batch(vocab, args.source_tokens, bs, args.seed, device)
        configs = [(v, e) for v in args.variants for e in ENGINES]
        first_ms, times = {}, {c: [] for c in configs}
        enc_ms = {v: [] for v in args.variants}
        eager_out, same = {}, {}
        for v, e in configs:
            for i in range(args.warmup):
                ms, out = timed(e, models[v], ids, mask, args.new_tokens, device)
                if i == 0:
                    first_ms[v, e] = ms
                    print(f"bs={bs} {v} {e}: first call {ms / 1000:.1f} s", flush=True)
            if e == "eager":
                eager_out[v] = out
            else:
                same[v] = torch.equal(out, eager_out[v])
        for r in range(args.runs):
            k = r % len(configs)
            for v, e in configs[k:] + configs[:k]:
                times[v, e].append(timed(e, models[v], ids, mask, args.new_tokens, device)[0])
            for v in args.variants:
                enc_ms[v].append(timed_encoder(models[v], ids, mask, device))
            print(f"bs={bs} round {r + 1}/{args.runs} done", flush=True)
        for v, e in configs:
            xs = times[v, e]
            q1, q3 = quartiles(xs)
            results.append({"batch_size": bs, "variant": v, "engine": e,
                            "median_ms": statistics.median(xs), "min_ms": min(xs),
                            "max_ms": max(xs), "q1_ms": q1, "q3_ms": q3, "runs_ms": xs,
                            "first_call_ms": first_ms[v, e],
                            "encoder_median_ms": statistics.median(enc_ms[v]),
                            "same_tokens_as_eager": True if e == "eager" else same[v]})
    env["load_avg_1m_after"] = os.getloadavg()[0]
    print(table(results, args.variants))
    print(f"\n# load avg 1m after {env['load_avg_1m_after']:.2f}")
    goal = goal_line(results)
    if goal:
        print(goal)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
                                         "env": env, "results": results}, indent=2) + "\n")
    return 0 if all(r["same_tokens_as_eager"] for r in results) else 1


# The goal: the compiled engine at least twice as fast as eager for the unpruned model
# at batch 1 (what a deep decoder pays per token is what the compiled step removes).
GOAL_RATIO = 2.0


def goal_line(results: list[dict]) -> str | None:
    by = {(r["batch_size"], r["variant"], r["engine"]): r for r in results}
    e, c = by.get((1, "e6d6", "eager")), by.get((1, "e6d6", "compiled"))
    if e is None or c is None:
        return None
    ratio = e["median_ms"] / c["median_ms"]
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    return (f"# goal compiled >= {GOAL_RATIO:g}x eager at BS1 (e6d6): {ratio:.2f}x, {verdict}")


def table(results: list[dict], variants: list[str]) -> str:
    """Markdown: one row per (batch size, variant), both engines side by side."""
    by = {(r["batch_size"], r["variant"], r["engine"]): r for r in results}
    lines = ["", "| bs | variant | eager median ms (min-max) | compiled median ms (min-max) "
             "| compiled first call s | eager / compiled | eager speedup vs e6d6 "
             "| compiled speedup vs e6d6 | encoder ms | decoding only: eager / compiled "
             "| same tokens |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for bs in sorted({r["batch_size"] for r in results}):
        for v in variants:
            e, c = by[bs, v, "eager"], by[bs, v, "compiled"]
            enc = e["encoder_median_ms"]

            def vs_base(engine, row):
                base = by.get((bs, "e6d6", engine))
                return f"{base['median_ms'] / row['median_ms']:.2f}x" if base else "n/a"

            lines.append(
                f"| {bs} | {v} | {e['median_ms']:.0f} ({e['min_ms']:.0f}-{e['max_ms']:.0f}) "
                f"| {c['median_ms']:.0f} ({c['min_ms']:.0f}-{c['max_ms']:.0f}) "
                f"| {c['first_call_ms'] / 1000:.1f} | {e['median_ms'] / c['median_ms']:.2f}x "
                f"| {vs_base('eager', e)} | {vs_base('compiled', c)} | {enc:.0f} "
                f"| {(e['median_ms'] - enc) / (c['median_ms'] - enc):.2f}x "
                f"| {'yes' if c['same_tokens_as_eager'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
