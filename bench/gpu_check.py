"""One-shot GPU check of the engines, for whenever a GPU machine is lent (under 8 minutes).

    .venv/bin/python bench/gpu_check.py                  # on the GPU machine
    .venv/bin/python bench/gpu_check.py --dry            # the same steps on CPU, tiny models

Steps, each result written as it comes under --out-dir (default reports/bench/gpu_check_<dev>):
  1. tokens   eager vs compiled vs ct2-float32, fp32, greedy, natural length: on the demo's
              model shape (tiny T5 of configs/demo.yaml, random weights with EOS made likely)
              and on the FLAN-T5-base architecture (random weights, fixed length); per model,
              whether each engine's tokens equal eager's (tokens.json)
  2. graphs   the compiled engine's CUDA graphs were captured (asymprune.compiled_engine checks it
              after the first call and raises otherwise; its flag is recorded) (graphs.json)
  3. memory   peak memory that one generate call adds (torch's allocator) for eager and
              compiled, base and large, e6d6, batch 1, source lengths 128 / 512 / 1024
              (memory.json)
  4. timing   asymprune.benchmark --arch base --variants e6d6 e6d3 e6d1 --engines eager
              compiled ct2-float16 ct2-int8_float16 --batch-sizes 1 16 (one JSON per variant
              under timing/, the benchmark's own format)
With --dry every step runs on the CPU with tiny shapes and CPU compute types (ct2-float32,
ct2-int8) instead: it checks that the script works, not the numbers. The exit status is 1 when
any engine's tokens differ from eager's where they must be equal (compiled, ct2-float32).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from asymprune import compiled_engine, ct2
from asymprune.benchmark import inputs as bench_inputs
from asymprune.benchmark import stage as bench_stage
from asymprune.benchmark import timing as bench_timing
from asymprune.engine import generate_with

DEMO_SHAPE = dict(d_model=128, d_ff=256, d_kv=32, num_heads=4, num_layers=6,
                  num_decoder_layers=6, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=64,
                  vocab_size=1000, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
TINY_SHAPE = {**DEMO_SHAPE, "d_model": 32, "d_ff": 48, "d_kv": 8, "vocab_size": 120}
IDENTICAL = ("compiled", "ct2-float32")  # engines that must give eager's tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true",
                   help="CPU, tiny shapes, CPU compute types: check the script, not the GPU")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="default reports/bench/gpu_check_cuda (reports/bench/gpu_check_dry)")
    p.add_argument("--steps", nargs="+", default=["tokens", "graphs", "memory", "timing"],
                   choices=["tokens", "graphs", "memory", "timing"])
    args = p.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = Path("reports/bench") / ("gpu_check_dry" if args.dry else
                                                "gpu_check_cuda")
    if not args.dry and not torch.cuda.is_available():
        p.error("no CUDA device: run this on a GPU machine, or pass --dry")
    return args


def plan(dry: bool) -> dict:
    """What each step runs: the GPU plan, or the same steps shrunk for a CPU dry run."""
    if dry:
        return {"device": torch.device("cpu"), "arch": None, "memory_sizes": [],
                "source_lengths": [32, 64], "new_tokens": 8, "eval_docs": 4,
                "engines": ["eager", "compiled", "ct2-float32", "ct2-int8"],
                "timing": ["--source-tokens", "32", "--new-tokens", "4", "--batch-sizes", "1",
                           "2", "--runs", "2", "--warmup", "1"]}
    return {"device": torch.device("cuda"), "arch": "base", "memory_sizes": ["base", "large"],
            "source_lengths": [128, 512, 1024], "new_tokens": 64, "eval_docs": 16,
            "engines": ["eager", "compiled", "ct2-float16", "ct2-int8_float16"],
            "timing": ["--source-tokens", "512", "--new-tokens", "64", "--batch-sizes", "1",
                       "16", "--runs", "5", "--warmup", "2"]}


def demo_model(shape: dict, device: torch.device):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**shape)).eval()
    with torch.no_grad():
        model.lm_head.weight[1] *= 6.0   # EOS likely: rows stop at different steps
        model.lm_head.weight[0] = 0.0    # never <pad>
    return model.to(device)


def random_batch(vocab: int, n: int, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, n), generator=g)
    ids[:, -1] = 1
    mask = torch.ones_like(ids)
    mask[1:, n // 2:] = 0  # rows of other lengths: the padding path is compared too
    ids[1:, n // 2:] = 0
    ids[1:, n // 2 - 1] = 1
    return ids.to(device), mask.to(device)


def token_check(name: str, model, device: torch.device, n_source: int, new_tokens: int,
                docs: int, fixed: bool) -> dict:
    """Per engine (eager, compiled, ct2-float32): its tokens and whether they equal eager's."""
    ids, mask = random_batch(model.config.vocab_size, n_source, docs, device)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens if fixed else 0)
    out = {"model": name, "fixed_length": fixed, "documents": docs}
    with tempfile.TemporaryDirectory() as tmp:
        ct2.export_model(model, ct2.IdVocabulary(model.config.vocab_size), Path(tmp))
        decoders = {"eager": model, "compiled": model,
                    "ct2-float32": ct2.Ct2Model(Path(tmp), "float32", device.type, 0)}
        eager = generate_with("eager", model, ids, mask, **kw)
        for e, dec in decoders.items():
            got = generate_with(e, dec, ids, mask, **kw)
            same = got.shape == eager.shape and bool(torch.equal(got.cpu(), eager.cpu()))
            rows = [bool(torch.equal(a.cpu(), b.cpu())) for a, b in zip(got, eager)] \
                if got.shape == eager.shape else [False] * docs
            out[e] = {"identical": same, "identical_rows": sum(rows),
                      "new_tokens": int(got.shape[1] - 1)}
    return out


def graphs_check(model, device: torch.device) -> dict:
    """The runner of the last compiled call: its CUDA-graph proof (None on CPU)."""
    runners = compiled_engine._RUNNERS.get(model, {})
    return {"device": device.type, "runners": len(runners),
            "cuda_graphs": [r.cuda_graphs for r in runners.values()],
            "all_captured": bool(runners) and all(r.cuda_graphs for r in runners.values())
            if device.type == "cuda" else None}


def memory_check(size: str, lengths: list[int], device: torch.device, new_tokens: int) -> list:
    model = bench_inputs.build_arch_model(size, "e6d6", "auto", 0, device, "fp32")
    rows = []
    for n in lengths:
        ids, mask = random_batch(model.config.vocab_size, n, 1, device)
        for e in ("eager", "compiled"):
            generate_with(e, model, ids, mask, max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens)  # the compiled step compiles here
            before = bench_timing.memory_before(device)
            generate_with(e, model, ids, mask, max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens)
            rows.append({"size": size, "source_tokens": n, "engine": e,
                         "peak_added_mib": bench_timing.memory_added(device, e, before),
                         "resident_weights_mib": sum(p.numel() * p.element_size()
                                                     for p in model.parameters()) / 2**20})
    del model
    return rows


def write(out_dir: Path, name: str, obj) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {out_dir / name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = plan(args.dry)
    device, t0, ok = p["device"], time.time(), True
    models = {"demo": demo_model(TINY_SHAPE if args.dry else DEMO_SHAPE, device)}
    if p["arch"]:
        models[f"flan-t5-{p['arch']}"] = bench_inputs.build_arch_model(p["arch"], "e6d6", "auto", 0,
                                                                   device, "fp32")
    if "tokens" in args.steps:
        results = [token_check(name, m, device, p["source_lengths"][-1], p["new_tokens"],
                               p["eval_docs"], fixed=name != "demo")
                   for name, m in models.items()]
        write(args.out_dir, "tokens.json", results)
        for r in results:
            for e in IDENTICAL:
                print(f"tokens {r['model']} {e}: "
                      f"{'identical' if r[e]['identical'] else 'DIFFERENT'} to eager "
                      f"({r[e]['identical_rows']}/{r['documents']} rows)")
                ok &= r[e]["identical"]
    if "graphs" in args.steps:
        model = models["demo"]
        ids, mask = random_batch(model.config.vocab_size, 64, 2, device)
        generate_with("compiled", model, ids, mask, max_new_tokens=p["new_tokens"])
        g = graphs_check(model, device)
        write(args.out_dir, "graphs.json", g)
        print(f"CUDA graphs captured: {g['all_captured']}")
    if "memory" in args.steps:
        rows = [r for size in p["memory_sizes"]
                for r in memory_check(size, p["source_lengths"], device, p["new_tokens"])]
        if args.dry:  # no FLAN-T5 size is small enough for a dry run: the demo shape
            model = models["demo"]
            for n in p["source_lengths"]:
                ids, mask = random_batch(model.config.vocab_size, n, 1, device)
                before = bench_timing.memory_before(device)
                generate_with("eager", model, ids, mask, max_new_tokens=p["new_tokens"])
                rows.append({"size": "demo", "source_tokens": n, "engine": "eager",
                             "peak_added_mib": bench_timing.memory_added(device, "eager", before)})
        write(args.out_dir, "memory.json", rows)
    if "timing" in args.steps:
        arch = p["arch"] or "small"
        variants = ["e6d6", "e6d3", "e6d1"] if not args.dry else ["e6d1"]
        bench_stage.main(["--arch", arch, "--variants", *variants, "--engines", *p["engines"],
                        "--device", device.type, "--nash-protocol", "false",
                        "--output-dir", str(args.out_dir / "timing"), *p["timing"]])
    write(args.out_dir, "summary.json", {"dry": args.dry, "tokens_ok": ok,
                                         "wall_s": time.time() - t0, "steps": args.steps,
                                         "device": bench_stage.device_name(device)})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
