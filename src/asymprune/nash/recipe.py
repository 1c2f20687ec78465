"""The NASH stage's run as a recipe (torchtune's shape; ``nash.cli``'s docstring, the stage's
``--help``, says why it is a hand-written loop): :class:`NashRecipe` builds everything
(``setup``), runs the loop (``train_step`` / ``train``), finalises (``finish``: ``finalise``,
then the output folder and its sidecar) and ``cleanup``s; :func:`run` runs it. Saving,
resuming and checkpoint selection are ``nash.checkpointing``; the finalisation's steps and
records are ``nash.finalise``."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import time

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from transformers import DataCollatorForSeq2Seq, get_scheduler

from asymprune.artifacts import atomic_dir, write_jsonl
from asymprune.batching import batch_plan, label_pad_id
from asymprune.checkpoints import discard_stale, fingerprint
from asymprune.model_record import ModelRecord, NashFacts, Phase, derive, read_model_record
from asymprune.modeling import count_parameters, load_model, load_tokenizer, resolve_device
from asymprune.nash import gates
from asymprune.nash.checkpointing import (CHECKPOINT_PREFIX, Checkpointing, newest_checkpoint,
                                          sigterm_flag)
from asymprune.nash.data import ExampleStream, micro_batch_positions, tokenized, total_steps
from asymprune.nash.finalise import (NashResult, Pruned, evaluate, final_masks, prune,
                                     reached_sparsity, summarize_history)
from asymprune.nash.job import NashJob, student_blocks
from asymprune.nash.masking import make_gates
from asymprune.nash.objective import GatedStudent, NashObjective, freeze_embeddings
from asymprune.nash.params import EncoderDims
from asymprune.nash.prune import encoder_widths
from asymprune.provenance import make_sidecar, write_json
from asymprune.surgery import keep_blocks

log = logging.getLogger("asymprune.nash")

EXIT_PREEMPTED = 143          # 128 + SIGTERM(15)
# Arguments that do not change what is trained: a checkpoint written under other values of
# these is still resumable (the batch divisor splits the same examples differently; the
# tolerances and the validation size only act after training).
FINGERPRINT_EXCLUDE = {"output", "checkpoint_dir", "save_steps", "logging_steps", "device",
                       "config_key", "batch_divisor", "sparsity_tolerance",
                       "gate_miss_tolerance", "max_eval_samples"}
TERM_KEYS = ("kl", "ce", "enc_mse", "dec_mse", "distill")   # summed over micro-batches


class NonFiniteLoss(FloatingPointError):
    pass


class NashRecipe(Checkpointing):
    """One NASH run: ``setup`` (devices, models, data, optimisers, resume), ``train`` (the loop
    of ``train_step``, with ``save`` and SIGTERM), ``finish`` (``finalise``: masks ->
    pruning -> checks -> validation, a :class:`NashResult`; then ``write_output``) and
    ``cleanup``. Every process runs every method; only process 0 writes files. ``self.s`` is
    the frozen settings the run trains with, ``self.spec`` what the variant id fixes."""

    def __init__(self, job: NashJob):
        self.job = job
        self.args, self.s, self.spec = job.args, job.settings, job.spec
        self.t0 = time.time()
        self.step, self.history, self.resumed = 0, [], None
        # checkpoint selection: when it started, the best (step, score) so far, every score
        self.selection = {"started_at_step": None, "best_step": None, "best_score": None,
                          "scores": []}
        self.objective = None
        self.accelerator = None

    # ---- setup

    def setup(self) -> None:
        args = self.args
        s, spec = self.s, self.spec
        device = resolve_device(args.device)
        if s.precision == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        # One Python process may run several stages (the tests do); the HF Trainer resets
        # accelerate's process-wide state the same way before building its own.
        AcceleratorState._reset_state(reset_partial_state=True)
        # Mixed precision stays ours (torch.autocast + one GradScaler): accelerate's wrapped
        # optimizers would update the scale between our three optimisers' steps.
        acc = self.accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
        self.device, self.world, self.rank = acc.device, acc.num_processes, acc.process_index
        self.per_device, self.accum = batch_plan(
            s.effective_batch_size, s.per_device_batch_size, args.batch_divisor,
            self.world, args.config_key)
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16,
                          "fp16": torch.float16}[s.precision]
        torch.manual_seed(s.seed)   # every process alike: DDP starts them equal anyway

        # the teacher's record, read before training (an older sidecar fails now)
        self.teacher_record = read_model_record(args.teacher)
        self.tokenizer = load_tokenizer(args.teacher)
        self.teacher = load_model(args.teacher).to(self.device).eval().requires_grad_(False)
        self.dims = EncoderDims.from_config(self.teacher.config)
        n_enc, n_dec = len(self.teacher.encoder.block), len(self.teacher.decoder.block)
        self.enc_blocks, self.dec_blocks = student_blocks(args.variant, args.layer_selection, n_enc,
                                                          n_dec)
        self.student = keep_blocks(copy.deepcopy(self.teacher), self.enc_blocks,
                                   self.dec_blocks).train().requires_grad_(True)
        self.frozen = freeze_embeddings(self.student) if s.freeze_embeddings else 0

        self.train_data = tokenized(args.train_file, self.tokenizer, s.max_source_length,
                                    s.max_target_length, s.max_train_samples)
        self.valid_data = tokenized(args.validation_file, self.tokenizer, s.max_source_length,
                                    s.max_target_length, s.max_eval_samples)
        self.select_data = self.valid_data[:s.selection_samples]
        # the collator also builds decoder_input_ids (labels shifted right) from the teacher;
        # label_padding pad: padding carries the pad id, so every loss counts it (the
        # token masks below are labels != -100)
        collator = DataCollatorForSeq2Seq(
            self.tokenizer, model=self.teacher,
            label_pad_token_id=label_pad_id(s.label_padding, self.tokenizer),
            pad_to_multiple_of=8 if self.device.type == "cuda" else None)
        self.collate = lambda rows: collator(rows).to(self.device)
        self.stream = ExampleStream(len(self.train_data), s.seed)
        self.total = total_steps(s.epochs, s.max_steps, len(self.train_data),
                                 s.effective_batch_size)
        self.warmup = round(s.sparsity_warmup_fraction * self.total)

        self.l0 = spec.encoder_mode == "l0"
        self.gate_module, self.dec_gate_module = make_gates(s, self.l0, self.dims,
                                                            self.student.config, self.device)
        self.model = GatedStudent(self.student, self.gate_module, self.dec_gate_module)
        gate_params = [p for m in (self.gate_module, self.dec_gate_module) if m is not None
                       for p in m.parameters()]
        self.lambdas = nn.Parameter(torch.zeros(2, device=self.device))   # (lambda_1, lambda_2)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.student.parameters() if p.requires_grad], lr=s.learning_rate,
            weight_decay=s.weight_decay)
        self.scheduler = get_scheduler(s.lr_scheduler, self.optimizer,
                                       num_warmup_steps=s.warmup_steps,
                                       num_training_steps=self.total)
        self.gate_opt = (torch.optim.AdamW(gate_params, lr=s.gate_learning_rate,
                                           weight_decay=0.0) if gate_params else None)
        # maximize=True: the multipliers climb the Lagrangian while everything else descends it
        self.lambda_opt = torch.optim.AdamW([self.lambdas], lr=s.reg_learning_rate,
                                            weight_decay=0.0, maximize=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=s.precision == "fp16")

        # process 0 discards stale checkpoints and sets incomplete ones aside; the others then
        # find only complete ones
        with acc.main_process_first():
            if acc.is_main_process:   # RNG states are per process: another world size starts over
                discard_stale(args.checkpoint_dir,
                              fingerprint(self.job.record(world_size=self.world),
                                          FINGERPRINT_EXCLUDE, "nash"),
                              f"{CHECKPOINT_PREFIX}-*")
            self.resumed = newest_checkpoint(args.checkpoint_dir)
        if self.resumed is not None:
            self.load(self.resumed)
        elif acc.is_main_process:
            shutil.rmtree(args.checkpoint_dir / "best", ignore_errors=True)   # a former run's
        acc.wait_for_everyone()
        # after loading: DDP broadcasts process 0's weights, equal on every process by now
        self.ddp = acc.prepare(self.model)
        self.objective = NashObjective(self.ddp, self.student, self.teacher,
                                       list(enumerate(self.enc_blocks)),
                                       list(enumerate(self.dec_blocks)), s, self.lambdas)
        log.info("%d process(es): %d per device x %d accumulation x %d = %d examples per step; "
                 "%d steps", self.world, self.per_device, self.accum, self.world,
                 s.effective_batch_size, self.total)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---- one optimizer step

    def train_step(self) -> dict[str, float]:
        """Forward/backward over this process's micro-batches of the current step, then one
        step of each optimiser. Returns the step's terms over the whole effective batch."""
        acc, step = self.accelerator, self.step
        s, spec = self.s, self.spec
        target = gates.target_at(step, spec.target_sparsity, self.warmup) if self.l0 else 0.0
        batches = [self.collate([self.train_data[i] for i in self.stream.indices(pos)])
                   for pos in micro_batch_positions(step, s.effective_batch_size,
                                                    self.per_device, self.accum, self.rank)]
        counts = torch.tensor([[float((b["labels"] != -100).sum()),
                                float(b["attention_mask"].sum()), float(len(b["labels"]))]
                               for b in batches], dtype=torch.float64, device=self.device)
        target_tokens, source_tokens, _ = acc.reduce(counts.sum(0), "sum")
        sums = torch.zeros(len(TERM_KEYS) + 1, dtype=torch.float64, device=self.device)
        sums[-1] = counts[:, 2].sum()
        terms = {}
        for i, batch in enumerate(batches):
            # gradients are all-reduced once, after the last micro-batch
            sync = contextlib.nullcontext() if i == len(batches) - 1 else acc.no_sync(self.ddp)
            with sync:
                terms = self.objective.terms(batch, target, target_tokens, source_tokens,
                                             self.autocast)
                # the terms are this process's share of the step's token averages (its sums
                # / the step's token counts) and DDP averages gradients over the processes:
                # x world. R is one term per step: / accumulation on each micro-batch.
                loss = self.world * terms["distill"]
                if "reg" in terms:
                    loss = loss + terms["reg"] / self.accum
                self.scaler.scale(loss).backward()
            sums[:-1] += torch.stack([terms[k].detach().double() for k in TERM_KEYS])
        sums = acc.reduce(sums, "sum")
        entry = {"step": step + 1, **{k: float(v) for k, v in zip(TERM_KEYS, sums)},
                 "examples": int(sums[-1]), "target_tokens": int(target_tokens),
                 "lr": self.scheduler.get_last_lr()[0]}
        entry["loss"] = entry["distill"]
        if self.l0:
            entry.update(reg=float(terms["reg"].detach()), target=target,
                         expected_sparsity=float(terms["expected_sparsity"].detach()))
            entry["loss"] += entry["reg"]
        if not all(map(math.isfinite, entry.values())):   # equal sums everywhere: all raise
            raise NonFiniteLoss(
                f"non-finite NASH loss at optimizer step {step + 1}: "
                + ", ".join(f"{k} {v}" for k, v in entry.items() if k != "step")
                + "; lower the learning rates or use fp32")
        if self.l0:   # outside DDP: average by hand, so every process ascends alike
            self.lambdas.grad = acc.reduce(self.lambdas.grad, "mean")
        if s.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.student.parameters() if p.requires_grad], s.max_grad_norm)
        for opt in (self.optimizer, self.gate_opt, self.lambda_opt if self.l0 else None):
            if opt is not None:
                self.scaler.step(opt)
        self.scaler.update()
        self.scheduler.step()
        if self.dec_gate_module is not None:
            self.dec_gate_module.constrain_(s.log_alpha_limit)
        if self.l0:
            self.gate_module.constrain_(s.log_alpha_limit)
            entry.update(lambda_1=float(self.lambdas[0].detach()),
                         lambda_2=float(self.lambdas[1].detach()))
        for opt in (self.optimizer, self.gate_opt, self.lambda_opt):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        self.step += 1
        return entry

    def train(self, on_step=None) -> int | None:
        """Steps until the end; EXIT_PREEMPTED after a SIGTERM (checkpoint saved).
        ``on_step(step)`` is called after each optimizer step (tests interrupt runs with it)."""
        acc = self.accelerator
        s = self.s
        with sigterm_flag() as preempted:
            self.student.train()
            while self.step < self.total:
                entry = self.train_step()
                step = self.step
                if s.checkpoint_selection == "best" and (step % s.eval_steps == 0
                                                            or step == self.total):
                    self.select(entry)
                if step % s.logging_steps == 0 or step == self.total or step == 1:
                    self.history.append(entry)
                    log.info("step %d/%d %s", step, self.total,
                             " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
                if on_step is not None:
                    on_step(step)
                # a SIGTERM may reach the processes at different steps: stop them at one
                stop = bool(acc.reduce(torch.tensor([float(preempted[0])],
                                                    device=self.device), "sum") > 0)
                if step % s.save_steps == 0 or step == self.total or stop:
                    self.save()
                if stop:
                    log.warning("stopped by SIGTERM at step %d; rerun to resume", step)
                    return EXIT_PREEMPTED
        self.check_in_sync()
        return None

    def check_in_sync(self) -> None:
        """Every process must end with the same weights, gates and multipliers (DDP and the
        hand-averaged multiplier gradients guarantee it; a drift would be a bug)."""
        groups = [list(self.student.parameters()), [self.lambdas]]
        if self.l0:
            groups.append(list(self.gate_module.parameters()))
        if self.dec_gate_module is not None:
            groups.append(list(self.dec_gate_module.parameters()))
        sums = torch.stack([sum(p.detach().double().sum() for p in g) for g in groups])
        every = self.accelerator.gather(sums).view(self.world, -1)
        if not bool((every == every[0]).all()):
            raise RuntimeError(f"processes ended training out of sync (parameter sums per "
                               f"process: weights, multipliers, gates = {every.tolist()})")

    # ---- masks, physical pruning, outputs

    def finish(self) -> int:
        """Process 0 prunes, evaluates and writes ``--output``; the others wait for it."""
        if self.accelerator.is_main_process:
            if self.s.checkpoint_selection == "best":
                self.load_best()
            self.write_output(self.finalise())
        self.accelerator.wait_for_everyone()
        return 0

    def finalise(self) -> NashResult:
        """Masks -> physical pruning -> checks -> validation: the pruned student (in
        ``self.student``) and what was done to it."""
        self.objective.remove_hooks()
        self.student.eval()
        masks = final_masks(self.gate_module, self.spec.target_sparsity, self.s)
        factors = (self.dec_gate_module.fold_factors()
                   if self.dec_gate_module is not None else None)
        diff = prune(self.model, masks, factors, self.valid_data[:self.per_device],
                     self.collate, self.dims, self.device)
        reached, kept_params = reached_sparsity(self.student, self.dims)
        if self.l0 and abs(reached - self.spec.target_sparsity) > self.s.sparsity_tolerance:
            raise RuntimeError(f"reached sparsity {reached:.4f} is off the target "
                               f"{self.spec.target_sparsity} by more than "
                               f"{self.s.sparsity_tolerance}")
        heads, units = encoder_widths(self.student)
        pruned = Pruned(masks=masks, decoder_gate_factors=factors,
                        masked_vs_pruned_max_abs_diff=diff, reached_sparsity=reached,
                        encoder_prunable_kept=kept_params, heads_per_layer=heads,
                        ffn_units_per_layer=units)
        validation = evaluate(self.student, self.teacher, self.valid_data, self.collate,
                              self.per_device, self.s)
        print(f"{self.args.variant}: encoder sparsity reached {reached:.4f} (target "
              f"{self.spec.target_sparsity}); heads {heads}, FFN units {units}; decoder blocks "
              f"{list(self.dec_blocks)} of {len(self.teacher.decoder.block)}; validation CE "
              f"{validation['ce']:.4f}, KL {validation['kl']:.4f}")
        return NashResult(pruned=pruned, validation=validation)

    def write_output(self, result: NashResult) -> None:
        """``--output``: the pruned model, its tokenizer, the loss history, the kept units and
        the sidecar."""
        self.student.to("cpu")
        with atomic_dir(self.args.output) as tmp:
            self.student.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            write_jsonl(tmp / "nash_history.jsonl", self.history)
            write_json(tmp / "nash_masks.json", result.pruned.masks.kept_lists())
            write_json(tmp / "sidecar.json", self.sidecar(result))

    def sidecar(self, result: NashResult) -> dict:
        """The NASH stage's sidecar; ``record`` is what evaluate and the report read."""
        args, s, spec, pruned = self.args, self.s, self.spec, result.pruned
        factors = pruned.decoder_gate_factors
        return make_sidecar(
            "nash", self.job.record(),
            samples={"train": len(self.train_data), "validation": len(self.valid_data)},
            wall_time_s=time.time() - self.t0,
            variant=args.variant,
            record=self.record(result).to_dict(),
            sparsity_definition="1 - kept / teacher's encoder prunable parameters "
                                "(heads 4*d_model*d_kv, FFN units (3 if gated else 2)*d_model)",
            masked_vs_pruned_max_abs_diff=pruned.masked_vs_pruned_max_abs_diff,
            protocol=spec.protocol,
            selection=self.selection_record(),
            # the decoder gates' values folded into the weights (min / mean / max)
            decoder_gate_factors=(
                {k: {"min": float(f.min()), "mean": float(f.mean()), "max": float(f.max())}
                 for k, f in zip(("self_heads", "cross_heads", "ffn_units"), factors)}
                if factors is not None else None),
            teacher={"path": str(args.teacher), "encoder_layers": self.dims.n_layers,
                     "decoder_layers": len(self.teacher.decoder.block)},
            kept={"encoder_blocks": list(self.enc_blocks),
                  "decoder_blocks": list(self.dec_blocks),
                  "encoder_heads_per_layer": pruned.heads_per_layer,
                  "encoder_ffn_units_per_layer": pruned.ffn_units_per_layer,
                  "encoder_kept_heads": (pruned.masks.kept_lists()["encoder_kept_heads"]
                                         if self.l0 else None)},
            parameters={"teacher": count_parameters(self.teacher),
                        "pruned": count_parameters(self.student),
                        "encoder_prunable_teacher": self.dims.full_params(),
                        "encoder_prunable_pruned": pruned.encoder_prunable_kept,
                        "counts_lm_head": False},
            batch={"effective": s.effective_batch_size, "per_device": self.per_device,
                   "accumulation": self.accum, "world_size": self.world,
                   "batch_divisor": args.batch_divisor},
            training={"steps": self.total, "sparsity_warmup_steps": self.warmup,
                      "resumed_from": str(self.resumed) if self.resumed else None,
                      "frozen_embedding_parameters": self.frozen,
                      "final_lambdas": [float(x) for x in self.lambdas.detach()]
                      if self.l0 else None},
            loss_summary=summarize_history(self.history),
            validation=result.validation)

    def record(self, result: NashResult) -> ModelRecord:
        """The pruned model's record (what the report reads): the teacher's, this stage's
        phase, and what it reached (``NashFacts``)."""
        spec, pruned = self.spec, result.pruned
        report = pruned.masks.report
        facts = NashFacts(
            variant=self.args.variant, protocol=spec.protocol,
            target_sparsity=spec.target_sparsity, reached_sparsity=pruned.reached_sparsity,
            gates_expected_sparsity=report.get("gates_expected_sparsity"),
            mask_sparsity_before_adjustment=report.get("mask_sparsity_before_adjustment"),
            units_removed=report.get("units_removed"),
            units_restored=report.get("units_restored"),
            gates_missed_target=report.get("gates_missed_target"),
            encoder_blocks=tuple(self.enc_blocks), decoder_blocks=tuple(self.dec_blocks),
            parameters=count_parameters(self.student))
        phase = Phase("nash", self.args.variant, self.total, self.s.effective_batch_size)
        return derive(self.teacher_record, len(self.student.encoder.block),
                      len(self.student.decoder.block), phase, facts)

    def cleanup(self) -> None:
        if self.objective is not None:
            self.objective.remove_hooks()
        if self.accelerator is not None:
            self.accelerator.end_training()


def run(job: NashJob, on_step=None) -> int:
    """Train, prune, write ``--output``. ``on_step(step)`` is called after each optimizer step
    (tests use it to interrupt a run)."""
    recipe = NashRecipe(job)
    try:
        recipe.setup()
        code = recipe.train(on_step)
        return code if code is not None else recipe.finish()
    finally:
        recipe.cleanup()
