"""``python -m asymprune.plan --configfile config.yaml``: the grid's bill before it runs.

Per rule: job count, estimated wall time per job and in total, GPU-hours, peak host memory, and
the SLURM ``runtime`` / ``mem_mb`` each rule should request (``asymprune.bill.request``: the
estimate x 1.5 + 5 min, memory x 1.3), written as a Snakemake ``set-resources`` snippet to add
to a profile. Estimates come from a calibration on this device (``--calibrate``, cached in
``<results>/<preset>/plan/calibration.json``; ``asymprune.calibrate`` says what it times) and
the cost model in ``asymprune.bill``. When the preset's Snakemake ``benchmark:`` files exist
(``<results>/<preset>/benchmarks/``, one per job that ran), it prints each rule's error against
them.

Not modelled (printed with the bill): downloads (hub models and data sets), the compiled
engine's compilation, and the report's drawing (start-up only).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from asymprune import bill as B
from asymprune import settings as S
from asymprune import variants as V
from asymprune import workflow_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"

# Split sizes of the hub data sets of config.yaml (their dataset cards).
HUB_SPLITS = {
    ("abisee/cnn_dailymail", "3.0.0"): {"train": 287_113, "validation": 13_368, "test": 11_490},
    ("EdinburghNLP/xsum", None): {"train": 204_045, "validation": 11_332, "test": 11_334},
}
NOT_MODELLED = ("downloads of hub models and data sets, the compiled engine's compilation "
                "(benchmark), drawing the report and converting to CTranslate2 (start-up "
                "only), CTranslate2's own decoding speed (evaluate_engine and ct2-* benchmark "
                "cells are billed at eager's)")


def split_sizes(spec: S.Data, override: dict[str, int] | None) -> dict[str, int] | None:
    """Examples per split of a data set, after its max_samples caps; None when unknown."""
    if override:
        sizes = dict(override)
    elif spec.kind == "generated":
        sizes = dict(spec.num_samples)
    elif spec.kind == "hub":
        sizes = HUB_SPLITS.get((spec.path, spec.name))
        if sizes is None:
            return None
        sizes = dict(sizes)
    else:  # local files: count their lines when they are JSONL
        sizes = {}
        for split in S.SPLITS:
            path = Path(spec.path) / spec.files.get(split, f"{split}.{spec.format}")
            if spec.format != "jsonl" or not path.is_file():
                return None
            with path.open() as f:
                sizes[split] = sum(1 for line in f if line.strip())
    return {k: min(v, spec.max_samples.get(k, v)) for k, v in sizes.items()}


def depth_blocks(variant: str, n_enc: int, n_dec: int, strategy: str) -> tuple[int, int]:
    """(encoder, decoder) blocks a final model keeps; a NASH encoder counts as full depth (its
    width pruning makes it cheaper: an upper bound)."""
    v = V.parse(variant)
    enc, dec = (v.blocks(n_enc, n_dec) if isinstance(v, V.NashVariant)
                else v.blocks(n_enc, n_dec, strategy))
    return len(enc), len(dec)


def _costs(cal: dict) -> dict[str, B.BlockCost]:
    """BlockCost per measured quantity from the three calibrated architectures of one size."""
    e, d = cal["blocks"]
    return {key: B.BlockCost.fit(e, d, cal["full"][key], cal["one_enc"][key], cal["one_dec"][key])
            for key in ("train_example_s", "encode_doc_s", "decode_step_s", "decode_step_b1_s",
                        "params", "act_mb_per_example")}


def step_at(costs: dict[str, B.BlockCost], enc: int, dec: int, batch: int, eval_batch: int
            ) -> float:
    """A decoding step at ``batch``: linear between batch 1 and the evaluation batch."""
    s1 = costs["decode_step_b1_s"].at(enc, dec)
    sb = costs["decode_step_s"].at(enc, dec)
    if eval_batch == 1:
        return s1
    return s1 + (sb - s1) * (batch - 1) / (eval_batch - 1)


def nash_step_ratio(scal: dict, costs: dict[str, B.BlockCost]) -> float:
    """A NASH-stage example's measured cost (the calibration's ``nash``: one variant, at the
    stage's batch) over what a training example of the student plus a teacher forward cost at
    the fine-tune's batch; 1 where the calibration timed none. Every NASH-stage job of the size
    is billed at this ratio (a gated variant's: equal-budget baselines, without gates, cost a
    little less)."""
    if "nash" not in scal:
        return 1.0
    e, d = scal["nash"]["blocks"]
    n_enc, n_dec = scal["blocks"]
    plain = (costs["train_example_s"].at(e, d)
             + B.FORWARD_SHARE * costs["train_example_s"].at(n_enc, n_dec))
    return scal["nash"]["example_s"] / plain


def stale(cfg: workflow_config.Resolved, cal: dict) -> list[str]:
    """Why a cached calibration cannot bill ``cfg``: a size it has not timed, a NASH-stage
    step it did not time (a file from before it did), or a multi-core CPU calibration without
    the co-run measurement. Empty: it can."""
    problems = []
    for size in cfg.models:
        scal = cal["sizes"].get(size)
        if scal is None:
            problems.append(f"no calibration of model {size}")
            continue
        if "nash" not in scal and any(V.protocol(v) != "released"
                                      for v in cfg.nash_stage_variants(size)):
            problems.append(f"{size}: no timed NASH-stage step")
        if (cal["device"]["kind"] == "cpu" and cal["device"]["cores"] > 1
                and "corun_jobs" not in scal):
            problems.append(f"{size}: no co-run measurement of the {cal['device']['cores']} "
                            f"CPU cores")
    return problems


def estimate(cfg: workflow_config.Resolved, cal: dict, sizes_override: dict[str, dict]
             ) -> tuple[list[B.Job], list[str]]:
    """Every job of the config with its estimate, keyed by its benchmark file; and notes."""
    jobs: list[B.Job] = []
    notes: list[str] = []
    start = cal["startup"]
    strategy = cfg.layer_selection
    sizes = {name: split_sizes(spec, sizes_override.get(name)) for name, spec in cfg.datasets.items()}
    for name, n in sizes.items():
        if n is None:
            notes.append(f"data set {name}: split sizes unknown (local files missing or a hub set "
                         f"this table lacks): not billed; give --dataset-size "
                         f"{name}=TRAIN,VALIDATION,TEST")
    known = [d for d in cfg.datasets if sizes[d] is not None]
    for d in known:
        jobs.append(B.Job("data", start["data"]["s"], start["data"]["rss_mb"], 0, f"data/{d}"))
    ev, bench = cfg.evaluate, cfg.benchmark
    gen_tokens = min(ev.max_new_tokens, cfg.finetune.max_target_length)
    for size, spec in cfg.models.items():
        res = spec["resources"]
        gpus = res["gpu"] * res["gpus_per_job"]
        one_gpu = 1 if res["gpu"] else 0
        scal = cal["sizes"][size]
        k = _costs(scal)
        n_enc, n_dec = scal["blocks"]
        # the teacher fine-tune and the benchmark take every core on a CPU; a speed-up measured
        # below 1 (a contended machine) or above the core count is not one: bounded, and said
        cores = cal["device"]["cores"]
        threads = scal.get("threads_speedup", 1.0)
        if not 1.0 <= threads <= cores:
            notes.append(f"{size}: measured {threads:.2f}x from {cores} threads (contended "
                         f"machine?); the teacher and benchmark are billed at "
                         f"{min(max(threads, 1.0), cores):.0f}x")
            threads = min(max(threads, 1.0), cores)
        teacher_speedup = threads if not res["gpu"] else res["gpus_per_job"]
        # on a CPU, the jobs of the other rules run one per core at once, each slower than
        # alone by the measured co-run slowdown (below 1 is noise: not a speed-up)
        corun = max(scal.get("corun_slowdown", 1.0), 1.0) if cal["device"]["kind"] == "cpu" \
            else 1.0
        first_job = len(jobs)
        nash_cost = nash_step_ratio(scal, k)
        ddp = max(res["gpus_per_job"], 1) if res["gpu"] else 1
        base = {g: start[g]["rss_mb"] for g in start}

        def train(rule, key, t: S.Training, enc, dec, n, speedup=ddp):
            steps = B.optimizer_steps(min(n["train"], t.max_train_samples or n["train"]),
                                      t.effective_batch_size, t.epochs, t.max_steps)
            ex = k["train_example_s"].at(enc, dec) / speedup
            wall = B.train_job_s(start["train"]["s"], steps, t.effective_batch_size, ex,
                                 min(t.max_eval_samples, n["validation"]))
            params = int(k["params"].at(enc, dec))
            mem = B.train_mem_mb(base["train"], params, k["act_mb_per_example"].at(enc, dec),
                                 t.per_device_batch_size)
            return B.Job(rule, wall, mem, gpus, key)

        for d in known:
            n = sizes[d]
            if "init_config" in spec:
                jobs.append(B.Job("tokenizer", start["tokenizer"]["s"], base["tokenizer"], 0,
                                  f"tokenizer/{size}/{d}"))
            jobs.append(train("finetune", f"finetune/{size}/{d}/{V.TEACHER}", cfg.finetune,
                              n_enc, n_dec, n, teacher_speedup))
            for v in cfg.variants:
                if v == V.TEACHER:
                    continue
                e, dd = depth_blocks(v, n_enc, n_dec, strategy)
                jobs.append(B.Job("prune_layers", start["infer"]["s"], B.infer_mem_mb(
                    base["infer"], int(k["params"].at(n_enc, n_dec))), 0,
                    f"prune_layers/{size}/{d}/{v}"))
                jobs.append(train("refinetune", f"refinetune/{size}/{d}/{v}", cfg.refinetune, e,
                                  dd, n))
            for v in cfg.nash_stage_variants(size):
                released = V.protocol(v) == "released"
                nt, nft = cfg.nash_stage_settings(v)[1], cfg.nash_finetune_settings(v)[1]
                e, dd = depth_blocks(v, n_enc, n_dec, strategy)
                steps = B.optimizer_steps(min(n["train"], nt.max_train_samples or n["train"]),
                                          nt.effective_batch_size, nt.epochs, nt.max_steps)
                student = k["train_example_s"].at(e, dd) / ddp
                teacher = k["train_example_s"].at(n_enc, n_dec) / ddp
                # the measured ratio is of a paper-protocol training step: the released
                # protocol's steps (other settings) and the validation's forward passes
                # (no backward, no gates' sampling) are billed without it
                ratio = 1.0 if released else nash_cost
                evals = min(nt.max_eval_samples, n["validation"])
                wall = (B.train_job_s(start["nash"]["s"], steps, nt.effective_batch_size,
                                      ratio * student, 0, teacher_example_s=ratio * teacher)
                        + evals * B.FORWARD_SHARE * (student + teacher))
                mem = (B.train_mem_mb(base["nash"], int(k["params"].at(e, dd)),
                                      k["act_mb_per_example"].at(e, dd), nt.per_device_batch_size)
                       + k["params"].at(n_enc, n_dec) * 4 / 2**20)
                jobs.append(B.Job("nash", wall, mem, gpus, f"nash/{size}/{d}/{v}"))
                jobs.append(train("nash_finetune", f"nash_finetune/{size}/{d}/{v}",
                                  nft, e, dd, n))
            n_test = min(n[ev.split], ev.max_samples or n[ev.split])

            def generate(rule, key, v):
                e, dd = depth_blocks(v, n_enc, n_dec, strategy)
                enc_s = k["encode_doc_s"].at(e, dd) * ev.max_source_length / scal["eval_src"]
                wall = B.generate_job_s(start["infer"]["s"], n_test, ev.batch_size, enc_s,
                                        k["decode_step_s"].at(e, dd), gen_tokens)
                jobs.append(B.Job(rule, wall, B.infer_mem_mb(
                    base["infer"], int(k["params"].at(e, dd))), one_gpu, key))

            for v in cfg.trained_variants(size):
                generate("evaluate", f"evaluate/{size}/{d}/{v}", v)
            # the workflow's other engines score and benchmark the variants of every size
            # (common.smk: eval_engine_outputs, bench_models)
            finals = cfg.trained_variants()
            for v in finals:
                for engine in ev.engines:  # billed at eager's speed: see NOT_MODELLED
                    generate("evaluate_engine", f"evaluate_engine/{size}/{d}/{v}/{engine}", v)
            ct2 = [e for e in list(ev.engines) + (list(bench.engines) if bench.enabled else [])
                   if e.startswith("ct2-")]
            if ct2:
                # one job exports every model of the size/data set, one at a time (ct2.smk):
                # billed as its start-up (the conversions: NOT_MODELLED), memory of the largest
                largest = max(int(k["params"].at(*depth_blocks(v, n_enc, n_dec, strategy)))
                              for v in finals)
                jobs.append(B.Job("ct2_export", start["infer"]["s"],
                                  B.infer_mem_mb(base["infer"], largest), 0,
                                  f"ct2_export/{size}/{d}"))
            if bench.enabled:
                wall = start["infer"]["s"]
                params = 0
                speed = threads if bench.device == "cpu" else 1.0
                for v in finals:
                    e, dd = depth_blocks(v, n_enc, n_dec, strategy)
                    params += int(k["params"].at(e, dd))
                    enc_tok = k["encode_doc_s"].at(e, dd) / scal["eval_src"]
                    cells = [(bs, bench.new_tokens if m == "fixed" else bench.max_new_tokens)
                             for bs in bench.batch_sizes for m in bench.modes]
                    cells = cells * len(bench.engines)
                    if bench.nash_protocol:  # beam 4 at batch 32: 128 rows per step
                        cells.append((128, bench.max_new_tokens))
                    for bs, toks in cells:
                        wall += (bench.warmup + bench.runs) * (
                            bs * enc_tok * bench.source_tokens
                            + toks * step_at(k, e, dd, bs, ev.batch_size)) / speed
                jobs.append(B.Job("benchmark", wall, B.infer_mem_mb(base["infer"], params),
                                  one_gpu, f"benchmark/{size}/{d}"))
        if corun > 1.0:
            notes.append(f"{size}: jobs that share the CPU billed at {corun:.2f}x their time "
                         f"alone (measured with {scal['corun_jobs']} training at once)")
            jobs[first_job:] = [j if j.rule in B.SERIAL_RULES else
                                dataclasses.replace(j, wall_s=j.wall_s * corun)
                                for j in jobs[first_job:]]
        elif scal.get("corun_slowdown", 1.0) < 1.0 and cal["device"]["kind"] == "cpu":
            notes.append(f"{size}: measured co-run slowdown {scal['corun_slowdown']:.2f}x (noise: "
                         f"jobs that share the CPU are billed at their time alone)")
        if "nash" in scal and any(V.protocol(v) == "released"
                                  for v in cfg.nash_stage_variants(size)):
            notes.append(f"{size}: released-protocol NASH runs billed without the measured "
                         f"NASH-step ratio {nash_cost:.2f}x (timed with the paper settings)")
    for arch in (cfg.benchmark.arch_only if bench.enabled else []):
        notes.append(f"benchmark_arch {arch}: not billed (FLAN-T5 with random weights, "
                     f"16 variants x the benchmark's cells; comparable to one benchmark job "
                     f"of that size)")
    jobs.append(B.Job("report", start["report"]["s"], start["report"]["rss_mb"], 0, "report"))
    notes.append("not modelled: " + NOT_MODELLED)
    return jobs, notes


def measured(bench_dir: Path) -> dict[str, dict[str, float]]:
    """Per job key (the tsv's path below ``bench_dir`` without .tsv): wall s, max RSS MB,
    cpu_time s, from Snakemake's benchmark files."""
    out = {}
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        key = str(tsv.relative_to(bench_dir).with_suffix(""))
        out[key] = {"s": float(row["s"]), "max_rss": float(row["max_rss"]),
                    "cpu_time": float(row["cpu_time"])}
    return out


def check(jobs: list[B.Job], meas: dict[str, dict[str, float]]
          ) -> list[tuple[str, int, float, float, float, float, float]]:
    """Per rule, summed over the jobs that have a benchmark file: (rule, jobs, estimated s,
    measured wall s, its error, measured CPU s, its error). The CPU time is the fairer yardstick
    on a shared machine (neighbours stretch the wall time) for one-thread jobs."""
    est: dict[str, float] = {}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    n: dict[str, int] = {}
    for j in jobs:
        if j.key in meas:
            est[j.rule] = est.get(j.rule, 0.0) + j.wall_s
            wall[j.rule] = wall.get(j.rule, 0.0) + meas[j.key]["s"]
            cpu[j.rule] = cpu.get(j.rule, 0.0) + meas[j.key]["cpu_time"]
            n[j.rule] = n.get(j.rule, 0) + 1
    return [(r, n[r], est[r], wall[r], B.relative_error(est[r], wall[r]), cpu[r],
             B.relative_error(est[r], cpu[r]) if cpu[r] > 0 else float("nan")) for r in est]


def _hms(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_bill(rules: list[B.RuleBill]) -> str:
    lines = [f"{'rule':<14}{'jobs':>5}{'wall/job':>11}{'total':>10}{'GPU-h':>8}{'peak MB':>9}"
             f"{'runtime':>9}{'mem_mb':>8}"]
    for r in rules:
        lines.append(f"{r.rule:<14}{r.jobs:>5}{_hms(r.wall_per_job_s):>11}{_hms(r.total_s):>10}"
                     f"{r.gpu_hours:>8.1f}{r.peak_mem_mb:>9.0f}{r.runtime_min:>9}{r.mem_mb:>8}")
    total = sum(r.total_s for r in rules)
    lines.append(f"{'total':<14}{sum(r.jobs for r in rules):>5}{'':>11}{_hms(total):>10}"
                 f"{sum(r.gpu_hours for r in rules):>8.1f}")
    return "\n".join(lines)


def resources_snippet(rules: list[B.RuleBill]) -> str:
    """A profile's ``set-resources`` block: each rule's request, for its longest job."""
    block = {"set-resources": {r.rule: {"runtime": r.runtime_min, "mem_mb": r.mem_mb}
                               for r in rules}}
    return ("# from python -m asymprune.plan: estimate x 1.5 + 5 min, memory x 1.3 "
            "(asymprune.bill); add to a profile's config.yaml\n" + yaml.safe_dump(block, sort_keys=False))


def parse_sizes(items: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for item in items:
        name, _, counts = item.partition("=")
        parts = counts.split(",")
        if not name or len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"--dataset-size {item!r}: expected NAME=TRAIN,VALIDATION,TEST")
        out[name] = dict(zip(S.SPLITS, map(int, parts)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asymprune.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"))
    p.add_argument("--calibrate", action="store_true",
                   help="time this device first (under 2 min) and cache the result")
    p.add_argument("--calibration", type=Path,
                   help="calibration file (default <results>/<preset>/plan/calibration.json)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="calibrate on this device (default: cuda when the config's models ask "
                        "for a GPU and one is here, else cpu)")
    p.add_argument("--benchmarks", type=Path,
                   help="Snakemake benchmark files to check against (default "
                        "<results>/<preset>/benchmarks)")
    p.add_argument("--resources-out", type=Path,
                   help="where to write the set-resources snippet (default "
                        "<results>/<preset>/plan/resources.yaml)")
    p.add_argument("--dataset-size", action="append", default=[], metavar="NAME=TR,VA,TE",
                   help="split sizes of a data set the plan cannot know (a private local set)")
    args = p.parse_args(argv)

    raw = yaml.safe_load(args.configfile.read_text())
    try:
        cfg = workflow_config.load(raw, SCHEMA)
    except workflow_config.ConfigError as e:
        print(f"invalid configuration {args.configfile}:\n{e}", file=sys.stderr)
        return 2
    out_dir = Path(cfg.results)
    cal_path = args.calibration or out_dir / "plan" / "calibration.json"
    if args.calibrate:
        from asymprune import calibrate  # torch: only here

        cal = calibrate.calibrate(cfg, device=args.device)
        cal_path.parent.mkdir(parents=True, exist_ok=True)
        cal_path.write_text(json.dumps(cal, indent=1))
        print(f"calibration ({cal['wall_s']:.0f} s on {cal['device']['name']}) -> {cal_path}")
    elif not cal_path.is_file():
        print(f"no calibration at {cal_path}: run with --calibrate first (under 2 minutes)",
              file=sys.stderr)
        return 2
    cal = json.loads(cal_path.read_text())
    problems = stale(cfg, cal)
    if problems:
        print(f"{cal_path} cannot bill this config ({'; '.join(problems)}): run with "
              f"--calibrate", file=sys.stderr)
        return 2
    jobs, notes = estimate(cfg, cal, parse_sizes(args.dataset_size))
    rules = B.bill(jobs)
    print(f"{args.configfile}: {len(jobs)} jobs (rule all not counted), estimated on "
          f"{cal['device']['name']} ({cal['device']['kind']}, calibrated {cal['created']})")
    print(format_bill(rules))
    if cal["device"]["kind"] == "cpu":
        cores = cal["device"]["cores"]
        print(f"on this CPU with snakemake --cores {cores}: about "
              f"{_hms(B.cpu_wall_s(rules, cores))} (serial rules {', '.join(B.SERIAL_RULES)}; "
              f"the others spread over {cores} cores)")
    for note in notes:
        print(f"  note: {note}")
    res_path = args.resources_out or out_dir / "plan" / "resources.yaml"
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.write_text(resources_snippet(rules))
    print(f"SLURM requests (estimate x {B.RUNTIME_MARGIN} + {B.RUNTIME_FLOOR_MIN} min, memory x "
          f"{B.MEM_MARGIN}) -> {res_path}")
    bench_dir = args.benchmarks or out_dir / "benchmarks"
    if bench_dir.is_dir():
        rows = check(jobs, measured(bench_dir))
        print(f"\nestimate vs measured (Snakemake benchmark files in {bench_dir}):")
        print(f"{'rule':<14}{'jobs':>5}{'estimated':>11}{'wall':>10}{'error':>8}{'CPU':>10}"
              f"{'error':>8}")
        for rule, n, est, wall, err, cpu, cerr in rows:
            print(f"{rule:<14}{n:>5}{_hms(est):>11}{_hms(wall):>10}{err:>+8.0%}{_hms(cpu):>10}"
                  f"{cerr:>+8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
