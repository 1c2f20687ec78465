"""Where a CPU generate spends its time: torch.profiler over eager and compiled greedy decoding.

    .venv/bin/python bench/profile_step.py                       # FLAN-T5-small arch, batch 1
    .venv/bin/python bench/profile_step.py --md reports/bench/profile_cpu_flan-t5-small.md

The question it answers (why the compiled engine stays behind CTranslate2 float32 on a CPU):
is the time in the matrix products a step cannot avoid, or in what surrounds them? It runs one
warm-up call per engine (the compiled engine compiles there), then profiles one call of each
on the same random source (exact FLAN-T5 shapes, random weights, fixed length), and sorts the
operators by their own CPU time. "matrix products" are the aten ops that multiply weights
(mm, addmm, bmm, matmul, linear and oneDNN's); everything else is the rest of the step:
softmax, layer norms, the cache updates, Python and the dispatcher between ops.
``bench/step_floor.py`` times the unavoidable products alone; CTranslate2 is timed next to
both engines by ``python -m asymprune.benchmark --engines ... ct2-float32``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from asymprune.benchmark.inputs import build_arch_model
from asymprune.engine import generate_with
from asymprune.flan_t5 import SIZES

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
              "mkldnn::_linear_pointwise", "aten::_mkldnn_linear", "mkl::_mkl_linear")
ENGINES = ("eager", "compiled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--variant", default="e6d6")
    p.add_argument("--source-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--top", type=int, default=12, help="operators listed per engine")
    p.add_argument("--md", type=Path, default=None, help="also write the tables here")
    return p.parse_args(argv)


def shares(events) -> tuple[float, float, list[tuple[str, float, int]]]:
    """(total own CPU ms, matrix-product ms, [(op, own ms, calls)] sorted by own time)."""
    # inductor names each compiled graph by a hash: one label for all of them
    rows = {}
    for e in events:
        key = "compiled graph (fused kernels)" if "CompiledFxGraph" in e.key else e.key
        ms, n = rows.get(key, (0.0, 0))
        rows[key] = (ms + e.self_cpu_time_total / 1000, n + e.count)
    rows = sorted(((k, ms, n) for k, (ms, n) in rows.items()), key=lambda r: -r[1])
    total = sum(ms for _, ms, _ in rows)
    matmul = sum(ms for key, ms, _ in rows if key in MATMUL_OPS)
    return total, matmul, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_arch_model(args.size, args.variant, "auto", 0, torch.device("cpu"), "fp32")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, model.config.vocab_size, (1, args.source_tokens), generator=g)
    ids[:, -1] = 1
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    lines = [f"# Profile of one generate call: FLAN-T5-{args.size} architecture, {args.variant}, "
             f"batch 1, {args.source_tokens} source tokens, {args.new_tokens} new tokens, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}", "",
             "Command: `.venv/bin/python " + " ".join(["bench/profile_step.py", *sys.argv[1:]])
             + "`", ""]
    outputs = {}
    for engine in ENGINES:
        with torch.inference_mode():
            generate_with(engine, model, ids, mask, **kw)  # warm-up (compiles)
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                outputs[engine] = generate_with(engine, model, ids, mask, **kw)
            wall = (time.perf_counter() - start) * 1000
        total, matmul, rows = shares(prof.key_averages())
        lines += [f"## {engine}: {wall:.0f} ms under the profiler; matrix products "
                  f"{matmul:.0f} ms = {matmul / total:.0%} of the operators' own CPU time "
                  f"({total:.0f} ms)", "", "| operator | own ms | share | calls |",
                  "|---|---:|---:|---:|"]
        lines += [f"| `{key}` | {ms:.1f} | {ms / total:.1%} | {n} |"
                  for key, ms, n in rows[:args.top]]
        lines.append("")
    same = torch.equal(outputs["eager"], outputs["compiled"])
    lines.append(f"Compiled tokens equal eager's: {same}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
