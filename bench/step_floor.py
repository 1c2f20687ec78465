"""The fastest a batch-1 greedy decoding step can be on this machine: the memory it must read.

    .venv/bin/python bench/step_floor.py --speed-json reports/bench/engine_speed_cpu_flan-t5-small.json

At batch 1 a cached decoding step is a chain of matrix-vector products: every weight it uses is
read once and multiplied by one vector, so the step cannot be faster than reading those bytes.
This script builds the model of an ``engine_speed.py`` run (same size, variant, seed and source
length), collects exactly what one step reads from each decoder block (self-attention q, k, v,
o; cross-attention q and o, whose keys and values were projected once and are cached; the FFN;
the cached cross-attention keys and values, 2 x source tokens x inner dim), plus the final
lm_head, and times those products with the model's own tensors, nothing else (no softmax, no
norms, no Python between them), in two layouts: as the model stores them (nn.Linear, out x in,
``F.linear``) and transposed to in x out (``x @ W``), which an engine could choose instead and
which CPU GEMV kernels often read faster. The faster median is the floor: a lower bound for any
engine that keeps fp32 weights. From the engine_speed run's
medians it then prints each engine's time per step and the best eager/compiled ratio an engine
could reach, (encoder + steps x eager step) / (encoder + steps x floor).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from asymprune.benchmark.inputs import build_arch_model
from asymprune.benchmark.stage import device_name


def best_ratio(eager_ms: float, encoder_ms: float, new_tokens: int, floor_ms: float) -> float:
    """eager generate time / the time of a generate whose steps all take ``floor_ms``.

    The encoder runs the same way in both engines, so only the steps can shrink: e.g. eager
    1189 ms with a 302 ms encoder and 64 steps at a 6 ms floor -> 1189 / (302 + 64 x 6) = 1.73.
    """
    return eager_ms / (encoder_ms + new_tokens * floor_ms)


def per_step_ms(total_ms: float, encoder_ms: float, new_tokens: int) -> float:
    """Time of one decoding step, the encoder taken out: (1189 - 302) / 64 = 13.9 ms."""
    return (total_ms - encoder_ms) / new_tokens


def step_operands(model, source_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(matrix, vector) pairs of one cached batch-1 decoding step; matrices in the layout the
    model stores them (nn.Linear: out x in), as F.linear reads them."""
    inner = model.config.num_heads * model.config.d_kv
    pairs = []

    def linear(weight):
        pairs.append((weight, torch.randn(1, weight.shape[1], dtype=weight.dtype)))

    for block in model.decoder.block:
        self_attn, cross, ffn = (layer for layer in block.layer)
        for lin in (self_attn.SelfAttention.q, self_attn.SelfAttention.k,
                    self_attn.SelfAttention.v, self_attn.SelfAttention.o,
                    cross.EncDecAttention.q, cross.EncDecAttention.o):
            linear(lin.weight)
        for name in ("wi_0", "wi_1", "wi", "wo"):
            if hasattr(ffn.DenseReluDense, name):
                linear(getattr(ffn.DenseReluDense, name).weight)
        # the cached cross-attention keys and values: scores = q K^T, then weights x V, each a
        # matrix-vector product over source_tokens x inner values
        for _ in range(2):
            linear(torch.randn(source_tokens, inner, dtype=model.dtype))
    linear(model.lm_head.weight)
    return pairs


def time_step(pairs, runs: int, warmup: int) -> dict[str, list[float]]:
    """ms per pass over all pairs, per layout; the two layouts interleaved run by run."""
    transposed = [(w.t().contiguous(), x) for w, x in pairs]
    passes = {"out x in (F.linear)": lambda: [torch.nn.functional.linear(x, w) for w, x in pairs],
              "in x out (x @ W)": lambda: [x @ w for w, x in transposed]}
    times = {name: [] for name in passes}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in passes.values():
                run()
        for _ in range(runs):
            for name, run in passes.items():
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speed-json", type=Path, required=True,
                   help="an engine_speed.py --json output: its model, source length and medians")
    p.add_argument("--variant", default="e6d6")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    speed = json.loads(args.speed_json.read_text())
    run = speed["args"]
    if run["device"] != "cpu":
        p.error("the floor is timed on the CPU: give the JSON of a CPU engine_speed run")
    if run.get("threads"):
        torch.set_num_threads(run["threads"])
    # engine_speed.py's --layer-selection (called --strategy in JSONs written before)
    selection = run.get("layer_selection", run.get("strategy"))
    model = build_arch_model(run["size"], args.variant, selection, run["seed"],
                             torch.device("cpu"), "fp32")
    pairs = step_operands(model, run["source_tokens"])
    mib = sum(w.numel() * w.element_size() for w, _ in pairs) / 2**20
    times = time_step(pairs, args.runs, args.warmup)
    print(f"# {device_name(torch.device('cpu'))} | torch {torch.__version__} | threads "
          f"{torch.get_num_threads()}")
    print(f"# FLAN-T5-{run['size']} {args.variant}, {run['source_tokens']} source tokens: one "
          f"batch-1 step reads {mib:.0f} MiB in {len(pairs)} matrix-vector products")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"# weights {name}: median {med:.2f} ms (min {min(ts):.2f}, max {max(ts):.2f}, "
              f"{args.runs} runs) = {mib * 2**20 / med / 1e6:.1f} GB/s")
    floor = min(statistics.median(ts) for ts in times.values())
    cells = {r["engine"]: r for r in speed["results"]
             if r["variant"] == args.variant and r["batch_size"] == 1}
    if set(cells) != {"eager", "compiled"}:
        p.error(f"{args.speed_json} has no batch-1 eager and compiled cells of {args.variant}")
    eager, compiled = cells["eager"], cells["compiled"]
    n = run["new_tokens"]
    for name, cell in (("eager", eager), ("compiled", compiled)):
        print(f"# {name}: {cell['median_ms']:.0f} ms per generate, "
              f"{per_step_ms(cell['median_ms'], cell['encoder_median_ms'], n):.1f} ms per step")
    print(f"# eager / compiled measured: {eager['median_ms'] / compiled['median_ms']:.2f}x; best "
          f"possible at the floor ({floor:.2f} ms per step): "
          f"{best_ratio(eager['median_ms'], eager['encoder_median_ms'], n, floor):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
