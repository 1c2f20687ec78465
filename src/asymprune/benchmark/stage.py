"""The benchmark stage: command line, models resident at once, every cell timed, one sidecar
(``asymprune.records.BenchRecord``) per variant. See ``asymprune.benchmark`` for the usage."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asymprune import records, settings, settings_io
from asymprune.benchmark import __doc__ as USAGE
from asymprune.benchmark.inputs import (build_arch_model, make_batches, random_sources,
                                        sources_from_file)
from asymprune.benchmark.timing import Cell, cells, check_fits, time_cell
from asymprune.flan_t5 import SIZES
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.modeling import (count_parameters, load_model, load_tokenizer, meta_model,
                                resolve_device, weight_bytes)
from asymprune.provenance import make_sidecar, read_json, write_json
from asymprune.variants import parse, parse_depth, sort

log = logging.getLogger("asymprune.benchmark")


def _variant_dir(text: str) -> tuple[str, Path]:
    variant, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected VARIANT=DIR, got {text!r}")
    try:
        parse(variant)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return variant, Path(path)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, settings.Benchmark]:
    """The job's own arguments and the protocol settings it runs with (for ``--arch``: fixed
    mode only unless ``--modes`` says otherwise, and no NASH protocol)."""
    p = argparse.ArgumentParser(prog="python -m asymprune.benchmark", description=USAGE,
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
    settings_io.add_arguments(p, settings.Benchmark, "protocol (asymprune.settings.Benchmark; with "
                                                  "--arch, modes defaults to fixed only)")
    modes_given = hasattr(p.parse_args(argv), "modes")  # a flag (not --settings) names them
    args, b = settings_io.parse(p, settings.Benchmark, argv)

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
        # random weights have no natural length: only fixed mode applies to an architecture
        # (unless --modes asks); beam search over random weights measures nothing real
        b = dataclasses.replace(b, modes=b.modes if modes_given else ["fixed"],
                                nash_protocol=False)
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
        if any(e.startswith("ct2-") for e in b.engines):
            missing = [v for v in names if v not in ct2_dirs]
            if missing:
                p.error(f"--engines {b.engines} has a ct2-* engine: give --ct2-model "
                        f"VARIANT=DIR for {missing}")
        elif ct2_dirs:
            p.error("--ct2-model given, but --engines has no ct2-* engine")
        for v, path in args.ct2_model:
            if not (path / "model.bin").is_file():
                p.error(f"--ct2-model {v}={path}: no model.bin there")
    if ("natural" in b.modes or b.nash_protocol) and args.data_file is None:
        p.error("natural mode and the NASH protocol need --data-file: when a model stops "
                "depends on real inputs (and random weights have no natural length)")
    if args.data_file is not None and not args.data_file.is_file():
        p.error(f"--data-file {args.data_file} does not exist")
    return args, b


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


def load_decoders(models: dict, args, b: settings.Benchmark, device: torch.device
                  ) -> tuple[dict[tuple[str, str], object], dict[str, dict]]:
    """What each (variant, engine) decodes with, every one resident at once, and per variant
    what its CTranslate2 export padded. ``--arch`` models are exported here (with an
    ``IdVocabulary``: they have no tokenizer); ``--model`` variants use ``--ct2-model``."""
    engines = list(dict.fromkeys(b.engines + (["eager"] if b.nash_protocol else [])))
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
    """One line per (variant, engine): median ms, the ratio to the variant's eager time, the
    spread and the foreign load (the report judges them)."""
    for (v, engine), s in stats.items():
        eager = stats.get((v, "eager"))
        ratio = f" {eager['median_ms'] / s['median_ms']:.2f}x eager" if eager else ""
        mem = (f", peak +{s['peak_memory_mb']:.0f} MiB" if s["peak_memory_mb"] is not None
               else "")
        load = ("" if s["foreign_load"] is None
                else f", foreign load {s['foreign_load']:.2f}")
        log.info("%s %s bs=%d %s %s: median %.1f ms%s (spread %.2f%s%s)", cell.protocol,
                 cell.mode, cell.batch_size, v, engine, s["median_ms"], ratio, s["spread"],
                 load, mem)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args, b = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(b.device)

    if device.type == "cuda":
        # sized on the meta device: shapes only, nothing read or allocated
        if args.arch is not None:
            metas = {v: build_arch_model(args.arch, v, args.layer_selection, args.seed,
                                         torch.device("meta"), b.dtype) for v in args.variants}
        else:
            metas = {v: meta_model(path, b.dtype) for v, path in args.model}
        check_fits({v: weight_bytes(m) for v, m in metas.items()},
                   torch.cuda.mem_get_info(device)[0],
                   f"benchmark of {args.size}/{args.dataset}" if args.dataset
                   else f"architecture-only benchmark of {args.size}", b.dtype)
    if args.arch is not None:
        models = {v: build_arch_model(args.arch, v, args.layer_selection, args.seed, device,
                                      b.dtype) for v in sort(args.variants)}
        tokenizer = None
    else:
        # every variant resident at once: the rounds alternate between them (check_fits above
        # stops a job whose weights cannot fit)
        paths = dict(args.model)
        models = {v: load_model(paths[v], b.dtype).to(device).eval() for v in sort(paths)}
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
        sources = sources_from_file(args.data_file, tokenizer, b.source_tokens, b.inputs)
        inputs = b.inputs
    else:
        # Fixed mode only: the content of the input does not change the amount of work.
        sources = random_sources(first.vocab_size, b.source_tokens,
                                 max(b.batch_sizes) * b.runs, args.seed, eos_id)
        inputs = "random"

    decoders, ct2_info = load_decoders(models, args, b, device)
    results = {v: [] for v in models}
    for cell in cells(b):
        # one batch per timed round: `runs` different groups of documents per batch size
        batches = make_batches(sources, cell.batch_size, b.runs, pad_id, device)
        source_tokens_mean = statistics.fmean(float(m.sum()) / m.shape[0] for _, m in batches)
        stats = time_cell(decoders, cell, batches, b, eos_id, device)
        for (v, engine), s in stats.items():
            results[v].append(records.BenchCell(
                protocol=cell.protocol, mode=cell.mode, engine=engine, inputs=inputs,
                batch_size=cell.batch_size, num_beams=cell.num_beams,
                source_tokens_mean=source_tokens_mean, **s))
        print_cell(cell, stats)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    wall = time.time() - start
    for v, model in models.items():
        cfg = model.config
        record = records.BenchRecord(
            size=args.size, dataset=args.dataset, variant=v,
            timed_with=tuple(models),
            device_label=args.device_label or device.type,
            device_name=device_name(device),
            model_source="arch" if args.arch is not None else "model",
            inputs=inputs,
            source_tokens=b.source_tokens,
            dtype=b.dtype,
            torch_threads=torch.get_num_threads(),
            load_avg_1m_end=os.getloadavg()[0],
            params=count_parameters(model),
            # what each CTranslate2 export padded back to full width (NASH encoders): padded
            # heads keep their compute on ct2-* engines
            ct2_export=ct2_info.get(v),
            encoder_layers=cfg.num_layers,
            decoder_layers=cfg.num_decoder_layers,
            results=tuple(results[v]))
        write_json(args.output_dir / f"{v}.json", make_sidecar(
            "benchmark", settings_io.record(args, b),
            samples={"warmup_runs": b.warmup, "timed_runs": b.runs,
                     "cells": len(results[v]), "distinct_sources": len(sources)},
            wall_time_s=wall, **record.to_dict()))
    log.info("wrote %d files to %s", len(models), args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
