"""Calibration of ``python -m asymprune.plan --calibrate``: what this device does per second.

Per model size of the config, three architectures with random weights: all blocks (E+D), one
encoder block (1+D) and one decoder block (E+1), each timed for
  - a training step (forward + backward + AdamW) at the stage's per-device batch and lengths;
  - generation at the evaluation batch: ``generate`` with exactly 2 and exactly 10 new tokens,
    whose difference / 8 is one decoding step of the batch and whose remainder is the encoder;
  - a decoding step at batch 1 (the benchmark's smallest batch).
``asymprune.bill.BlockCost`` fits each depth variant's cost from the three. The architectures
are the exact FLAN-T5 configs (``asymprune.flan_t5``) or the config's ``init_config``.

On a CPU a full-size step can take minutes, so each measurement shrinks its work to about
``CPU_FLOP_BUDGET`` floating-point operations (6 x parameters x tokens for a training step,
2 x parameters x tokens for a forward pass) by halving the batch, then the lengths, and scales
the time back linearly in examples and tokens (attention's quadratic term is left out, so long
sources come out a little optimistic; the sidecar records the shapes actually timed). CPU
timing uses the threads the rule's jobs get (one; the teacher fine-tune all cores), and on a
CPU with several cores it also times training while one job per core trains at once (the
slowdown that jobs sharing the CPU see; ``corun_slowdown``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from transformers import T5Config, T5ForConditionalGeneration

from asymprune import variants as V
from asymprune.generation import generate

CPU_FLOP_BUDGET = 1.0e11   # about a second per timed step on one core of this project's VMs
TIMED = 2                  # timed repetitions after one untimed warm-up
STAGE_IMPORTS = {          # start-up of a job = importing its stage module in a fresh python
    "train": "asymprune.finetune",
    "nash": "asymprune.nash.cli",
    "infer": "asymprune.evaluate",   # also prune_layers and benchmark: the same imports
    "data": "asymprune.data",
    "tokenizer": "asymprune.tokenizer",
    "report": "asymprune.report.__main__",  # the stage (the package itself imports nothing)
}


def startup(module: str) -> dict[str, float]:
    """CPU seconds and MB of a fresh ``python -c 'import module'`` (what every job pays first).
    CPU time, not wall: on a shared machine the wall time measures the neighbours; on an idle
    one the two agree (the import is single-threaded)."""
    code = f"import resource, {module}; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"s": cpu, "rss_mb": int(out.stdout.split()[-1]) / 1024}


def _shrink(batch: int, src: int, tgt: int, params: int, factor: int, budget: float
            ) -> tuple[int, int, int]:
    """Halve batch, then the lengths, until factor x params x tokens fits the budget."""
    while factor * params * batch * (src + tgt) > budget and batch > 1:
        batch = max(1, batch // 2)
    while factor * params * batch * (src + tgt) > budget and src > 16:
        src, tgt = max(16, src // 2), max(4, tgt // 2)
    return batch, src, tgt


def _timed(fn, clock=time.process_time) -> float:
    """Best of TIMED runs after a warm-up. On a CPU with one thread the clock is this process's
    CPU time (robust to neighbours on a shared machine; equal to wall time on an idle one)."""
    fn()
    times = []
    for _ in range(TIMED):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(kwargs: dict[str, Any], *, batch: int, src: int, tgt: int, eval_batch: int,
            eval_src: int, device: torch.device, cpu: bool, wall: bool = False,
            shrink_params: int | None = None, generation: bool = True) -> dict[str, float]:
    """Seconds per training example, per encoded document and per decoding step of one model
    (CPU seconds on a CPU unless ``wall``: several threads' CPU time is not their wall time)."""
    clock = time.perf_counter if (wall or not cpu) else time.process_time
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**kwargs)).to(device)
    params = sum(p.numel() for p in model.parameters())
    vocab = kwargs["vocab_size"]
    budget = CPU_FLOP_BUDGET if cpu else float("inf")
    out: dict[str, float] = {"params": params}

    # training: scaled back by examples and tokens
    # one shape for the three architectures of a size (the full one's), so the fit compares
    # like with like: smaller batches cost more per example
    sp = shrink_params or params
    b, s, t = _shrink(batch, src, tgt, sp, 6, budget)
    ids = torch.randint(2, vocab, (b, s), device=device)
    labels = torch.randint(2, vocab, (b, t), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)

    sec = _timed(step, clock)
    out["train_example_s"] = sec / b * (src + tgt) / (s + t)
    # activations: the peak above weights + grads + moments, per example at full lengths
    if device.type == "cuda":
        act = torch.cuda.max_memory_allocated(device) / 2**20 - params * 16 / 2**20
    else:
        act = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 \
            - params * 12 / 2**20  # weights existed before; grads + 2 moments are new
    out["act_mb_per_example"] = max(act, 0.0) / b * (src + tgt) / (s + t)
    out["timed_train_shape"] = [b, s, t]
    del opt
    if not generation:
        return out
    model.eval()

    # generation: exactly n new tokens (EOS suppressed until then)
    def gen(bb, ss, n):
        x = torch.randint(2, vocab, (bb, ss), device=device)

        def run():  # the stages' generate: a cache that follows the decoder's depth (e1d6)
            generate(model, x, torch.ones_like(x), max_new_tokens=n, min_new_tokens=n)
            _sync(device)
        return _timed(run, clock)

    gb, gs, _ = _shrink(eval_batch, eval_src, 1, sp, 2, budget)
    t2, t10 = gen(gb, gs, 2), gen(gb, gs, 10)
    step_s = max(t10 - t2, 0.0) / 8
    out["decode_step_s"] = step_s * eval_batch / gb  # a step's work grows with the batch
    out["encode_doc_s"] = max(t2 - 2 * step_s, 0.0) / gb * eval_src / gs
    out["timed_gen_shape"] = [gb, gs]
    b1_2, b1_10 = gen(1, min(gs, eval_src), 2), gen(1, min(gs, eval_src), 10)
    out["decode_step_b1_s"] = max(b1_10 - b1_2, 0.0) / 8
    return out


def measure_nash(kwargs: dict[str, Any], variant: str, nash_train, layer_selection: str, *,
                 device: torch.device, cpu: bool) -> dict[str, Any]:
    """Seconds per example of a NASH-stage step of ``variant`` (CPU seconds on a CPU): the
    teacher's forward, the gated student's forward and backward, the distillation and
    Lagrangian terms and its optimisers (the student's, the multipliers', the gates' where it
    has gates), at the stage's per-device batch and lengths. Its
    hooks, gates and losses, and a smaller batch than the fine-tunes', cost more than a plain
    training step plus a teacher forward: on the demo's tiny model the NASH-stage loop took
    about 1.4x that sum."""
    import copy

    from asymprune.nash.job import settings_for, student_blocks
    from asymprune.nash.masking import make_gates
    from asymprune.nash.objective import GatedStudent, NashObjective
    from asymprune.nash.params import EncoderDims
    from asymprune.surgery import keep_blocks

    s, spec = settings_for(variant, nash_train)
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(T5Config(**kwargs)).to(device).eval()
    teacher.requires_grad_(False)
    n_enc, n_dec = len(teacher.encoder.block), len(teacher.decoder.block)
    enc, dec = student_blocks(variant, layer_selection, n_enc, n_dec)
    student = keep_blocks(copy.deepcopy(teacher), enc, dec).train().requires_grad_(True)
    enc_gates, dec_gates = make_gates(s, spec.encoder_mode == "l0",
                                      EncoderDims.from_config(teacher.config), student.config,
                                      device)
    model = GatedStudent(student, enc_gates, dec_gates)
    lambdas = torch.nn.Parameter(torch.zeros(2, device=device))
    gate_params = [p for m in (enc_gates, dec_gates) if m is not None for p in m.parameters()]
    opts = [torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5),
            torch.optim.AdamW([lambdas], lr=1e-3, maximize=True)]
    if gate_params:
        opts.append(torch.optim.AdamW(gate_params, lr=1e-3))
    objective = NashObjective(model, student, teacher, list(enumerate(enc)),
                              list(enumerate(dec)), s, lambdas)
    params = sum(p.numel() for p in teacher.parameters())
    # 6 x parameters x tokens for the student's step, 2 x for the teacher's forward
    b, src, tgt = _shrink(s.per_device_batch_size, s.max_source_length, s.max_target_length,
                          params, 8, CPU_FLOP_BUDGET if cpu else float("inf"))
    vocab = kwargs["vocab_size"]
    ids = torch.randint(2, vocab, (b, src), device=device)
    labels = torch.randint(2, vocab, (b, tgt), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "decoder_input_ids": teacher._shift_right(labels)}

    def step():
        terms = objective.terms(batch, spec.target_sparsity)
        (terms["distill"] + terms.get("reg", 0.0)).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(device)

    sec = _timed(step, time.process_time if cpu else time.perf_counter)
    objective.remove_hooks()
    return {"variant": variant, "blocks": [len(enc), len(dec)],
            "example_s": sec / b * (s.max_source_length + s.max_target_length) / (src + tgt),
            "timed_shape": [b, src, tgt]}


def _corun_probe(kwargs: dict[str, Any], shape: dict[str, Any], barrier, results) -> None:
    """One of ``corun_slowdown``'s jobs (a spawned process): one thread, started with the
    others, reports the wall time of its training example."""
    torch.set_num_threads(1)
    barrier.wait()
    results.put(measure(kwargs, **shape, device=torch.device("cpu"), cpu=True, wall=True,
                        generation=False)["train_example_s"])


def corun_jobs(cores: int, job_mb: float, available_mb: float) -> int:
    """How many one-thread training jobs ``corun_slowdown`` starts: one per core, as many as
    fit in half the free memory (FLAN-T5-base, 4 GB of weights and AdamW state a job, on a
    32-core node would need 128 GB)."""
    return max(1, min(cores, int(available_mb / 2 // job_mb)))


def corun_slowdown(kwargs: dict[str, Any], shape: dict[str, Any], jobs: int,
                   alone_example_s: float, timeout_s: float = 900) -> float:
    """Wall time of a training example while ``jobs`` one-thread jobs train at once, over the
    CPU time of one alone (``alone_example_s``, the ``full`` measurement): what the jobs of a
    ``snakemake --cores N`` run that share the CPU see, from shared caches and memory bandwidth
    and, on a VM, from SMT siblings and the host's steal. (On the 2-core VM of this project's
    demo the re-fine-tunes' wall time was 1.1x their CPU time in a quiet hour, 1.3x in a busy
    one; calibrations measured 1.0-1.26x.)"""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")  # a fork of this process would share its torch threads
    # a job that dies before the barrier breaks it for the others instead of leaving them
    # waiting; daemons end with this process whatever happens
    barrier, results = ctx.Barrier(jobs, timeout=timeout_s), ctx.Queue()
    shape = {k: v for k, v in shape.items() if k not in ("device", "cpu")}
    procs = [ctx.Process(target=_corun_probe, args=(kwargs, shape, barrier, results),
                         daemon=True) for _ in range(jobs)]
    for proc in procs:
        proc.start()
    try:
        walls = [results.get(timeout=timeout_s) for _ in procs]
    except queue.Empty:
        codes = [proc.exitcode for proc in procs]
        for proc in procs:
            proc.terminate()
        raise RuntimeError(f"co-run calibration: {jobs} training jobs did not all report within "
                           f"{timeout_s:.0f} s (exit codes {codes}; None: still running)")
    for proc in procs:
        proc.join()
    return sorted(walls)[len(walls) // 2] / alone_example_s


def architecture(spec: dict) -> dict[str, Any]:
    """T5Config kwargs of a config's model entry (full depth)."""
    from asymprune.flan_t5 import HUB_IDS, config_kwargs

    if "init_config" in spec:
        return {"vocab_size": spec["tokenizer_vocab_size"], "pad_token_id": 0, "eos_token_id": 1,
                "decoder_start_token_id": 0, **spec["init_config"]}
    for size, hub_id in HUB_IDS.items():
        if spec["name_or_path"] == hub_id:
            return config_kwargs(size)
    raise ValueError(f"{spec['name_or_path']}: not a FLAN-T5 hub id nor an init_config; the "
                     f"calibration knows only those architectures")


def calibrate(cfg, device: str | None = None) -> dict[str, Any]:
    """Every model size of ``cfg`` (a ``workflow_config.Resolved``) on ``device``."""
    import datetime as dt

    from asymprune.provenance import cpu_model

    t_start = time.perf_counter()
    models = cfg.models
    if device is None:
        wants_gpu = any(m["resources"]["gpu"] for m in models.values())
        device = "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    cpu = dev.type == "cpu"
    name = torch.cuda.get_device_name(dev) if not cpu else cpu_model()
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"kind": device, "name": name, "cores": cores},
        "startup": {g: startup(m) for g, m in STAGE_IMPORTS.items()},
        "sizes": {},
    }
    ft, ev = cfg.finetune, cfg.evaluate
    shape = dict(batch=ft.per_device_batch_size, src=ft.max_source_length,
                 tgt=ft.max_target_length, eval_batch=ev.batch_size,
                 eval_src=ev.max_source_length, device=dev, cpu=cpu)
    for size, spec in models.items():
        full = architecture(spec)
        e = full["num_layers"]
        dd = full.get("num_decoder_layers") or e
        if cpu:
            torch.set_num_threads(1)  # refinetune, NASH, evaluate: one thread per job
        entry: dict[str, Any] = {"blocks": [e, dd], "eval_src": ev.max_source_length}
        entry["full"] = measure(full, **shape)
        sp = int(entry["full"]["params"])
        for label, (ne, nd) in {"one_enc": (1, dd), "one_dec": (e, 1)}.items():
            entry[label] = measure({**full, "num_layers": ne, "num_decoder_layers": nd}, **shape,
                                   shrink_params=sp)
        if cpu and cores > 1:
            # the teacher fine-tune and the benchmark take every core: their speed-up, in
            # wall time (contended machines make it smaller than it is)
            one = measure(full, **shape, wall=True)["train_example_s"]
            torch.set_num_threads(cores)
            many = measure(full, **shape, wall=True)["train_example_s"]
            entry["threads_speedup"] = one / many
            torch.set_num_threads(1)
            # the other rules' jobs run `cores` at a time (snakemake --cores N)
            b, src, tgt = entry["full"]["timed_train_shape"]
            job_mb = (out["startup"]["train"]["rss_mb"] + sp * 16 / 2**20
                      + entry["full"]["act_mb_per_example"] * b * (src + tgt)
                      / (ft.max_source_length + ft.max_target_length))
            free_mb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
            entry["corun_jobs"] = corun_jobs(cores, job_mb, free_mb)
            if entry["corun_jobs"] > 1:
                entry["corun_slowdown"] = corun_slowdown(full, shape, entry["corun_jobs"],
                                                         entry["full"]["train_example_s"])
        nash = [v for v in cfg.nash_stage_variants(size) if V.protocol(v) != "released"]
        if nash:  # a gated variant where there is one: the most work per example
            gated = [v for v in nash if isinstance(V.parse_nash_stage(v), V.NashVariant)]
            entry["nash"] = measure_nash(full, (gated or nash)[0], cfg.nash_train,
                                         cfg.layer_selection, device=dev, cpu=cpu)
        out["sizes"][size] = entry
    out["wall_s"] = time.perf_counter() - t_start
    return out
