"""NASH stage: shallow decoder by layer selection, narrow encoder by L0 training, then physical
pruning. The pruned model still needs the final fine-tuning (``asymprune.finetune --model``).

    python -m asymprune.nash --teacher results/P/models/S/D/e6d6/model \\
        --train-file .../train.jsonl --validation-file .../validation.jsonl \\
        --variant nash-d3-uniform-l0s30 \\
        --output results/P/models/S/D/nash-d3-uniform-l0s30/pruned \\
        --checkpoint-dir results/P/checkpoints/S/D/nash-d3-uniform-l0s30/nash
    # on N GPUs (DDP): python -m torch.distributed.run --standalone --nproc_per_node N \\
    #     -m asymprune.nash ...   (same flags; the effective batch stays the same)

1. Student = teacher with D decoder blocks of ``--variant nash-dD-...`` (``layers.select_k``: uniform
   floor((L-1)/(k-1) j), low, high; ``surgery.keep_blocks`` moves the position bias).
   Encoder mode ``layerss{P}`` keeps round((1 - t) L) uniformly chosen encoder blocks instead
   (``asymprune.variants.NashVariant.blocks``).
2. Training (paper section 4.3): KL(teacher || student) at temperature 2 on target tokens
   + 0.001 x encoder hidden-state MSE (same layers) + 0.001 x decoder hidden-state MSE (student
   layer j vs the teacher layer it was copied from) + R = l1 (s - t) + l2 (s - t)^2 (encoder
   mode ``l0s{P}``), with t warmed up linearly from 0 over the first
   ``sparsity_warmup_fraction`` of the steps. As the released code: AdamW over the weights
   (lr 3e-5, linear decay, shared embedding frozen), a second AdamW over the gates (lr 0.01,
   log_alpha clamped to +-ln 100 after each update; heads start at log_alpha 10, FFN units
   at 0) and a third, ``maximize=True``, over (l1, l2) (lr 0.01): gradient ascent on the
   multipliers.
3. Deterministic masks (``gates.deterministic_masks``: each layer keeps its expected number
   of units, highest log_alpha first, then units are moved until the sparsity is within
   ``sparsity_tolerance`` of the target; the sidecar records the gates' own expected sparsity,
   the rounded masks' sparsity and the moved units) and physical pruning (``nash.prune``); the
   stage checks that the masked and the pruned student give the same logits (max |diff| <= 1e-4).

As NASH's released code, optionally (``docs/nash.md``): ``decoder_gates`` puts hard-concrete
gates on the kept decoder blocks' self/cross-attention heads and FFN units too (trained with
the encoder's, in no sparsity) and folds their final values into the decoder's weights (in
the same logits check); ``checkpoint_selection: best`` scores the student as it would be
pruned (ROUGE-L of greedy summaries of ``selection_samples`` validation examples) every
``eval_steps`` once selection started, and prunes the best instead of the last;
``label_padding: pad`` lets padding count in every loss. The sidecar records the protocol
(``-rel`` ids: the released one) and the selection.

The run is a recipe (torchtune's shape): ``NashRecipe.setup`` / ``train_step`` / ``save`` /
``load`` / ``finish`` / ``cleanup``. It is a hand-written loop rather than a Trainer subclass:
a frozen teacher forward, a loss built from hooks on both models, three optimisers (one
ascending) and gate state all have to be checkpointed together; the Trainer would need
overrides of its loss, optimiser creation, checkpoint save and load, i.e. most of what it does.
``accelerate`` provides the devices, DDP and the collectives.

Under N processes every optimizer step still consumes ``effective_batch_size`` examples: each
process reads its own share (``nash.data``), DDP all-reduces the weights' and gates' gradients,
the multipliers' gradients are averaged by hand (they are outside DDP), so every process steps
identically (checked at the end). Only process 0 writes checkpoints, the output folder and
the sidecar; the others wait at a barrier.

Checkpoints (``--checkpoint-dir``, step-NNNNNNNN/state.pt, newest two kept, written into
``staging/`` and renamed into place when whole; an incomplete one is set aside, not resumed) hold the student, gates, multipliers, the three optimisers, the scheduler, the AMP
scaler, every process's RNG state, the loss history and the step (which fixes the data
position); a rerun resumes from the newest, one written under other settings, code or number
of processes is discarded. SIGTERM saves a checkpoint and exits 143. ``--batch-divisor K``
(an OOM retry) divides the per-device batch by K and multiplies accumulation by K: the same
examples per step, and the checkpoints stay resumable.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from torch import nn
from transformers import DataCollatorForSeq2Seq, get_scheduler

from asymprune import rouge, settings, settings_io, variants
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.artifacts import atomic_dir, write_jsonl
from asymprune.batching import batch_plan, label_pad_id
from asymprune.checkpoints import (discard_stale, fingerprint, publish, resumable, staging_dir,
                                   torch_file_problem)
from asymprune.generation import generate
from asymprune.modeling import count_parameters, load_model, load_tokenizer, resolve_device
from asymprune.nash import gates
from asymprune.nash.data import (ExampleStream, micro_batch_positions, tokenized,
                                 total_steps)
from asymprune.nash.loss import cross_entropy, hidden_mse, kl_distill, total_loss
from asymprune.nash.masking import (DecoderGates, DecoderMasks, EncoderGates, EncoderMasks,
                                    masks_from_indices)
from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity
from asymprune.nash.prune import encoder_widths, fold_decoder_gates, prune_encoder
from asymprune import records
from asymprune.provenance import make_sidecar, write_json
from asymprune.surgery import keep_blocks

log = logging.getLogger("asymprune.nash")

EXIT_PREEMPTED = 143          # 128 + SIGTERM(15)
MASK_CHECK_ATOL = 1e-4        # masked vs physically pruned logits
KEEP_CHECKPOINTS = 2
CHECKPOINT_PREFIX = "step"    # step-NNNNNNNN: zero-padded, so names sort by step
# Arguments that do not change what is trained: a checkpoint written under other values of
# these is still resumable (the batch divisor splits the same examples differently; the
# tolerances and the validation size only act after training).
FINGERPRINT_EXCLUDE = {"output", "checkpoint_dir", "save_steps", "logging_steps", "device",
                       "config_key", "batch_divisor", "sparsity_tolerance",
                       "gate_miss_tolerance", "max_eval_samples"}
TERM_KEYS = ("kl", "ce", "enc_mse", "dec_mse", "distill")   # summed over micro-batches


class NonFiniteLoss(FloatingPointError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asymprune.nash", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model and variant")
    m.add_argument("--teacher", required=True, help="fine-tuned teacher folder (or hub id)")
    m.add_argument("--variant", required=True,
                   help=f"NASH variant id, {variants.NASH_GRAMMAR} (asymprune.variants), e.g. "
                        f"nash-d3-uniform-l0s30: 3 decoder blocks chosen uniformly "
                        f"floor((L-1)/(k-1) j), encoder heads + FFN units L0-pruned to 30 %%; "
                        f"or an equal-budget baseline, {variants.BASELINE_GRAMMAR}, e.g. "
                        f"e6d2-kd: e6d2's blocks trained here without gates")
    m.add_argument("--layer-selection", choices=SIXTHS_STRATEGIES, default="auto",
                   help="for an equal-budget baseline: how sixths become blocks (the "
                        "workflow's layer_selection; default %(default)s)")
    d = p.add_argument_group("data")
    d.add_argument("--train-file", required=True, type=Path, help="train.jsonl (id, source, target)")
    d.add_argument("--validation-file", required=True, type=Path,
                   help="validation.jsonl: the pruned model's CE / KL are reported on it")
    r = p.add_argument_group("run")
    r.add_argument("--batch-divisor", type=int, default=1,
                   help="divide the per-device batch by this and multiply accumulation by it "
                        "(OOM retries); the effective batch is unchanged")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    o = p.add_argument_group("outputs")
    o.add_argument("--output", required=True, type=Path,
                   help="physically pruned model folder (model, tokenizer, sidecar.json)")
    o.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="resumable checkpoints (kept across reruns)")
    settings_io.add_arguments(p, settings.NashTrain)
    return p


@dataclass(frozen=True)
class StudentSpec:
    """What the variant id fixes about the student (facts of the id, not settings)."""

    encoder_mode: str          # l0, layerss or none
    target_sparsity: float
    protocol: str              # paper, or released (a -rel id)


@dataclass(frozen=True)
class NashJob:
    """One NASH run as the command line gives it: the stage's own arguments (paths, variant,
    ``--layer-selection``), the settings it trains with (after what the variant implies,
    :func:`settings_for`) and what the id fixes."""

    args: argparse.Namespace
    settings: settings.NashTrain
    spec: StudentSpec

    def record(self, **more) -> dict:
        """The sidecar's ``args`` and the checkpoint fingerprint's fields: all three."""
        return settings_io.record(self.args, self.settings, **dataclasses.asdict(self.spec),
                                  **more)


def settings_for(variant: str, s: settings.NashTrain) -> tuple[settings.NashTrain, StudentSpec]:
    """The settings a variant trains with and what its id fixes. An equal-budget baseline
    keeps the depth variant's blocks without gates (none in the decoder either) and the same
    steps and batches; ``kd`` keeps the distillation objective, ``ce`` trains on the labels
    alone. The gates' learning rate defaults to the multipliers'. Made once, here: the
    sidecar records these values."""
    v = variants.parse_nash_stage(variant)
    protocol = variants.protocol(variant)
    changes: dict = {}
    if isinstance(v, variants.BaselineVariant):
        spec = StudentSpec("none", 0.0, protocol)
        changes["decoder_gates"] = False
        if v.objective == "ce":
            changes.update(prediction_loss="ce", distill_enc=0.0, distill_dec=0.0)
    else:
        spec = StudentSpec(v.encoder_mode, v.target_sparsity, protocol)
    if s.gate_learning_rate is None:
        changes["gate_learning_rate"] = s.reg_learning_rate
    return dataclasses.replace(s, **changes), spec


def parse_args(argv: list[str] | None) -> NashJob:
    p = build_parser()
    args, s = settings_io.parse(p, settings.NashTrain, argv)
    try:
        s, spec = settings_for(args.variant, s)
    except ValueError as e:
        p.error(f"--variant: {e}")
    if args.batch_divisor < 1:
        p.error(f"--batch-divisor must be >= 1, got {args.batch_divisor}")
    for flag in ("train_file", "validation_file"):
        if not getattr(args, flag).is_file():
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} does not exist")
    return NashJob(args, s, spec)


def student_blocks(variant: str, layer_selection: str, n_enc: int,
                   n_dec: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(encoder, decoder) blocks of the teacher the student keeps: a NASH variant's selection,
    or an equal-budget baseline's depth variant by ``layer_selection`` (the blocks its
    re-fine-tuned twin keeps)."""
    v = variants.parse_nash_stage(variant)
    if isinstance(v, variants.BaselineVariant):
        return v.blocks(n_enc, n_dec, layer_selection)
    return v.blocks(n_enc, n_dec)


# ---------------------------------------------------------------------------------------------
# model


def freeze_embeddings(model) -> int:
    """Freeze the shared token embedding (the encoder's and decoder's ``embed_tokens`` are the
    same tensor; so is ``lm_head`` when tied), as the released code leaves ``shared`` and
    ``embed_tokens`` out of its optimizer. Returns the number of frozen parameters."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


class BlockOutputs:
    """Collects each block's output hidden states (the residual stream) in block order."""

    def __init__(self, stack):
        self.outputs: list[torch.Tensor] = []
        self._handles = [b.register_forward_hook(self._hook) for b in stack.block]

    def _hook(self, module, args, output):
        self.outputs.append(output[0])

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class GatedStudent(nn.Module):
    """The student and its gates (encoder, and the decoder's with ``decoder_gates``) as one
    module, so that DDP all-reduces the weights' and the gates' gradients together.
    ``forward`` draws one hard-concrete mask per unit (shared by the batch, as the released
    code) and returns (logits, expected sparsity of the encoder); the gate math runs in fp32
    whatever the autocast (a bf16 sigmoid would round s_hat to ~0.4 %)."""

    def __init__(self, student, gate_module: EncoderGates | None,
                 dec_gate_module: DecoderGates | None = None):
        super().__init__()
        self.student, self.gates, self.dec_gates = student, gate_module, dec_gate_module
        self.masks = EncoderMasks(student, gate_module.dims) if gate_module is not None else None
        self.dec_masks = DecoderMasks(student) if dec_gate_module is not None else None

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        s_hat = None
        with torch.autocast(input_ids.device.type, enabled=False):
            if self.gates is not None:
                self.masks.set(*self.gates.sample())
                s_hat = self.gates.expected_sparsity()
            if self.dec_gates is not None:
                self.dec_masks.set(*self.dec_gates.sample())
        logits = self.student(input_ids=input_ids, attention_mask=attention_mask,
                              decoder_input_ids=decoder_input_ids).logits
        return logits, s_hat


def final_normed(s_stack, t_stack, s_h: list, t_h: list, pairs) -> tuple[list, list]:
    """The block outputs to distil, with the last pair taken after each stack's
    ``final_layer_norm`` when it pairs the student's last block with the teacher's last block
    (Hugging Face's ``hidden_states[-1]``, what the released code distils; without the
    dropout that follows the norm). Measured on the demo (``docs/nash.md``,
    ``bench/nash_final_norm.py``): before the norm the last decoder pair alone was 91 % of the
    decoder hidden-state loss at the start of the NASH stage; after it, 25.5 %. Other pairs (a
    ``low`` selection's last block is not the teacher's last) stay block outputs."""
    (s_last, t_last) = pairs[-1]
    if s_last != len(s_h) - 1 or t_last != len(t_h) - 1:
        return s_h, t_h
    with torch.no_grad():
        t_norm = t_stack.final_layer_norm(t_h[-1])
    return s_h[:-1] + [s_stack.final_layer_norm(s_h[-1])], t_h[:-1] + [t_norm]


def reached_sparsity(student, dims: EncoderDims) -> tuple[float, int]:
    """Sparsity of the student's (physical) encoder against the teacher's: one param count."""
    heads, units = encoder_widths(student)
    kept = encoder_prunable_params(heads, units, dims)
    return float(sparsity(kept, dims.full_params())), int(kept)


class NashObjective:
    """The loss of one micro-batch, term by term (section 4.3).

    Hooks on every block of both models collect the hidden states. ``terms`` returns
    {kl, ce, enc_mse, dec_mse, distill, loss[, reg, expected_sparsity]}: ``distill`` =
    L_pred + l_enc L_h^enc + l_dec L_h^dec (L_pred: ``kl`` or ``ce`` by ``prediction_loss``),
    ``loss`` = distill + R. Token averages are over ``target_tokens`` / ``source_tokens``
    (the whole optimizer step's counts, ``nash.loss``), else over this batch's.
    ``forward`` is the (possibly DDP-wrapped) :class:`GatedStudent`.
    """

    def __init__(self, forward, student, teacher, enc_pairs, dec_pairs, settings, lambdas=None):
        self.forward, self.student, self.teacher = forward, student, teacher
        self.enc_pairs, self.dec_pairs = list(enc_pairs), list(dec_pairs)
        self.settings, self.lambdas = settings, lambdas
        self.t_enc, self.t_dec = BlockOutputs(teacher.encoder), BlockOutputs(teacher.decoder)
        self.s_enc, self.s_dec = BlockOutputs(student.encoder), BlockOutputs(student.decoder)

    def terms(self, batch, target: float, target_tokens=None, source_tokens=None,
              autocast=contextlib.nullcontext) -> dict:
        s = self.settings
        labels = batch["labels"]
        tok = labels != -100
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
        with torch.no_grad(), autocast():
            t_logits = self.teacher(**inputs).logits
        t_h_enc, t_h_dec = self.t_enc.take(), self.t_dec.take()
        with autocast():
            logits, s_hat = self.forward(**inputs)
        s_h_enc, t_h_enc = final_normed(self.student.encoder, self.teacher.encoder,
                                        self.s_enc.take(), t_h_enc, self.enc_pairs)
        s_h_dec, t_h_dec = final_normed(self.student.decoder, self.teacher.decoder,
                                        self.s_dec.take(), t_h_dec, self.dec_pairs)
        terms = {
            "kl": kl_distill(logits, t_logits, tok, s.kl_temperature, s.kl_direction,
                             tokens=target_tokens),
            "ce": cross_entropy(logits, labels, tokens=target_tokens),
            "enc_mse": hidden_mse(s_h_enc, t_h_enc, self.enc_pairs,
                                  batch["attention_mask"].bool(), tokens=source_tokens),
            "dec_mse": hidden_mse(s_h_dec, t_h_dec, self.dec_pairs, tok,
                                  tokens=target_tokens),
        }
        terms["distill"] = total_loss(terms[s.prediction_loss], terms["enc_mse"],
                                      terms["dec_mse"], None, s.distill_enc, s.distill_dec)
        terms["loss"] = terms["distill"]
        if s_hat is not None:
            reg = gates.lagrangian(s_hat, target, self.lambdas[0], self.lambdas[1])
            terms.update(reg=reg, expected_sparsity=s_hat, loss=terms["distill"] + reg)
        return terms

    def remove_hooks(self) -> None:
        for h in (self.t_enc, self.t_dec, self.s_enc, self.s_dec):
            h.remove()


# ---------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_problems(path: Path) -> list[str]:
    """What a checkpoint folder lacks to be resumed: its one ``state.pt``, whole."""
    problem = torch_file_problem(path / "state.pt")
    return [problem] if problem else []


def newest_checkpoint(ckpt: Path) -> Path | None:
    """The newest complete checkpoint, after setting aside incomplete ones (process 0 first)."""
    done = resumable(ckpt, CHECKPOINT_PREFIX, checkpoint_problems)
    return done[-1] if done else None


def save_checkpoint(ckpt: Path, step: int, state: dict) -> Path:
    """Write ``state`` into ``staging/``, rename it into place, keep the newest two."""
    final = ckpt / f"{CHECKPOINT_PREFIX}-{step:08d}"
    staged = staging_dir(ckpt) / final.name
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    torch.save(state, staged / "state.pt")
    publish(staged, final)
    for old in sorted(ckpt.glob(f"{CHECKPOINT_PREFIX}-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    return final


@contextlib.contextmanager
def sigterm_flag():
    """Yields a one-element list set to True on SIGTERM (SLURM's pre-emption notice)."""
    flag = [False]

    def handler(signum, frame):
        log.warning("SIGTERM received: checkpointing after this step, then exiting")
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(student, teacher, data, collate, batch_size: int,
             cfg: settings.NashTrain) -> dict[str, float]:
    """Token-averaged CE (labels) and KL to the teacher of the student on ``data``."""
    student.eval()
    ce_sum = kl_sum = 0.0
    tokens = 0
    for i in range(0, len(data), batch_size):
        batch = collate(data[i:i + batch_size])
        labels = batch.pop("labels")
        s, t = student(**batch).logits, teacher(**batch).logits
        mask = labels != -100
        n = int(mask.sum())
        ce_sum += float(cross_entropy(s, labels)) * n
        kl_sum += float(kl_distill(s, t, mask, cfg.kl_temperature, cfg.kl_direction)) * n
        tokens += n
    return {"ce": ce_sum / tokens, "kl": kl_sum / tokens, "tokens": tokens}


def summarize_history(history: list[dict]) -> dict:
    if not history:
        return {}
    tail = history[-max(1, len(history) // 10):]   # the last 10 % of logged steps
    keys = [k for k in history[0] if k != "step"]
    return {"logged_steps": len(history), "first": history[0], "last": history[-1],
            "tail_mean": {k: sum(h[k] for h in tail) / len(tail) for k in keys},
            "tail_steps": [tail[0]["step"], tail[-1]["step"]]}


def sparsity_report(expected: float, info: dict, target: float, miss_tolerance: float) -> dict:
    """The sidecar's account of how the encoder reached its sparsity, as plain fields.

    ``gates_missed_target`` judges the gates alone (before the deterministic mask moves units
    to meet the budget), e.g. target 0.30, expected 0.27, tolerance 0.02: missed (3 points)."""
    return {"gates_expected_sparsity": expected,
            "mask_sparsity_before_adjustment": info["sparsity_rounded"],
            "units_removed": info["units_removed"],
            "units_restored": info["units_restored"],
            "gates_missed_target": abs(expected - target) > miss_tolerance}


# ---------------------------------------------------------------------------------------------
# what finalisation returns


@dataclass(frozen=True)
class FinalMasks:
    """The encoder units kept (per layer: head and FFN-unit indices; None without L0 gates)
    and the gates' account of reaching the target (:func:`sparsity_report`; {} without)."""

    heads: list | None
    units: list | None
    report: dict

    def kept_lists(self) -> dict[str, list[list[int]]]:
        """``nash_masks.json``: the kept indices as plain lists."""
        return {"encoder_kept_heads": [list(map(int, h)) for h in (self.heads or [])],
                "encoder_kept_ffn_units": [list(map(int, u)) for u in (self.units or [])]}


@dataclass(frozen=True)
class Pruned:
    """What was pruned: the masks, the decoder gates' factors folded into the weights, the
    masked-vs-pruned logits check, and the pruned encoder's widths and sparsity."""

    masks: FinalMasks
    decoder_gate_factors: tuple | None
    masked_vs_pruned_max_abs_diff: float | None
    reached_sparsity: float
    encoder_prunable_kept: int
    heads_per_layer: list[int]
    ffn_units_per_layer: list[int]


@dataclass(frozen=True)
class NashResult:
    """The finalised student: what was pruned, and its validation CE / KL to the teacher."""

    pruned: Pruned
    validation: dict[str, float]


# ---------------------------------------------------------------------------------------------
# the recipe


class NashRecipe:
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
        self.gate_module = (EncoderGates(self.dims, s.head_gate_init_log_alpha,
                                         s.ffn_gate_init_droprate,
                                         temperature=s.gate_temperature).to(self.device)
                            if self.l0 else None)
        dec = self.student.config
        self.dec_gate_module = (DecoderGates(len(self.dec_blocks), dec.num_heads, dec.d_ff,
                                             s.head_gate_init_log_alpha,
                                             s.ffn_gate_init_droprate,
                                             temperature=s.gate_temperature).to(self.device)
                                if s.decoder_gates else None)
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

    # ---- checkpoints

    def save(self) -> None:
        rng = [torch.get_rng_state(),
               torch.cuda.get_rng_state() if self.device.type == "cuda" else None]
        rngs = gather_object([rng])          # a collective: every process takes part
        if self.accelerator.is_main_process:
            save_checkpoint(self.args.checkpoint_dir, self.step, {
                "step": self.step, "student": self.student.state_dict(),
                "gates": self.gate_module.state_dict() if self.l0 else None,
                "decoder_gates": (self.dec_gate_module.state_dict()
                                  if self.dec_gate_module is not None else None),
                "lambdas": self.lambdas.detach(), "optimizer": self.optimizer.state_dict(),
                "gate_optimizer": self.gate_opt.state_dict() if self.gate_opt else None,
                "selection": self.selection,
                "lambda_optimizer": self.lambda_opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs, "history": self.history})
        # nobody goes on (or exits) before the checkpoint is complete
        self.accelerator.wait_for_everyone()

    def load(self, path: Path) -> None:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        if len(state["rng"]) != self.world:
            raise RuntimeError(f"{path} was written by {len(state['rng'])} processes, this run "
                               f"has {self.world}; its fingerprint should have discarded it")
        self.student.load_state_dict(state["student"])
        if self.l0:
            self.gate_module.load_state_dict(state["gates"])
        if self.dec_gate_module is not None:
            self.dec_gate_module.load_state_dict(state["decoder_gates"])
        if self.gate_opt is not None:
            self.gate_opt.load_state_dict(state["gate_optimizer"])
        self.selection = state["selection"]
        with torch.no_grad():
            self.lambdas.copy_(state["lambdas"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lambda_opt.load_state_dict(state["lambda_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rng_cpu, rng_cuda = state["rng"][self.rank]
        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None:
            torch.cuda.set_rng_state(rng_cuda)
        self.step, self.history = state["step"], state["history"]
        log.info("resumed from %s (step %d of %d)", path, self.step, self.total)

    # ---- checkpoint selection (checkpoint_selection: best)

    @contextlib.contextmanager
    def pruned_view(self):
        """The student as it would be saved now: the encoder's deterministic masks for the
        final target (the units pruning would keep) and the decoder gates' fold factors,
        applied by the hooks; the training masks come back afterwards."""
        model = self.model
        s, spec = self.s, self.spec
        with torch.no_grad():
            if self.l0:
                heads, units, _ = self.gate_module.deterministic(spec.target_sparsity,
                                                                  s.sparsity_tolerance)
                model.masks.set(*masks_from_indices(heads, units, self.dims, self.device))
            if self.dec_gate_module is not None:
                model.dec_masks.set(*self.dec_gate_module.fold_factors())
        try:
            yield self.student
        finally:
            for m in (model.masks, model.dec_masks):
                if m is not None:
                    m.clear()

    @torch.no_grad()
    def selection_score(self) -> float:
        """ROUGE-L (F x 100) of the pruned view's greedy summaries of the first
        ``selection_samples`` validation examples, as the released trainer scores the
        pruned model; every process scores the same examples with the same weights."""
        s = self.s
        self.student.eval()
        predictions, references = [], []
        with self.pruned_view() as student:
            for i in range(0, len(self.select_data), self.per_device):
                rows = self.select_data[i:i + self.per_device]
                batch = self.collate(rows)
                out = generate(student, batch["input_ids"], batch["attention_mask"],
                               max_new_tokens=s.max_target_length)
                predictions += self.tokenizer.batch_decode(out, skip_special_tokens=True)
                references += self.tokenizer.batch_decode([r["labels"] for r in rows],
                                                          skip_special_tokens=True)
        for hooks in (self.objective.s_enc, self.objective.s_dec):
            hooks.take()          # generation went through the distillation hooks
        self.student.train()
        return rouge.score(predictions, references)["rougeL"]

    def select(self, entry: dict) -> None:
        """The released rule: selection starts at ``selection_start_fraction`` of the steps
        or at the first score where the gates' expected sparsity has reached the target;
        from then on a score above the best so far saves the student (and its gates) to
        ``checkpoint_dir/best``. E.g. 300 steps, fraction 1/3: from step 100 on."""
        sel, step = self.selection, self.step
        s, spec = self.s, self.spec
        if sel["started_at_step"] is None:
            reached = self.l0 and entry["expected_sparsity"] >= spec.target_sparsity
            if step >= math.ceil(s.selection_start_fraction * self.total) or reached:
                sel["started_at_step"] = step
            else:
                return
        score = self.selection_score()
        # the mean over processes is every process's own score; it keeps them in one state
        score = float(self.accelerator.reduce(
            torch.tensor([score], dtype=torch.float64, device=self.device), "mean"))
        sel["scores"].append([step, score])
        log.info("step %d: validation ROUGE-L of the pruned model %.3f (best %s)", step, score,
                 sel["best_score"])
        if sel["best_score"] is None or score > sel["best_score"]:
            sel["best_step"], sel["best_score"] = step, score
            if self.accelerator.is_main_process:
                with atomic_dir(self.args.checkpoint_dir / "best") as tmp:
                    torch.save({"step": step, "student": self.student.state_dict(),
                                "gates": self.gate_module.state_dict() if self.l0 else None,
                                "decoder_gates": (self.dec_gate_module.state_dict()
                                                  if self.dec_gate_module is not None
                                                  else None)}, tmp / "state.pt")
            self.accelerator.wait_for_everyone()

    def load_best(self) -> None:
        """Bring back the selected student and gates before pruning and saving."""
        sel = self.selection
        state = torch.load(self.args.checkpoint_dir / "best" / "state.pt", map_location="cpu",
                           weights_only=True)
        if state["step"] != sel["best_step"]:
            raise RuntimeError(f"{self.args.checkpoint_dir / 'best'} holds step "
                               f"{state['step']}, the selection chose {sel['best_step']}")
        self.student.load_state_dict(state["student"])
        if self.l0:
            self.gate_module.load_state_dict(state["gates"])
        if self.dec_gate_module is not None:
            self.dec_gate_module.load_state_dict(state["decoder_gates"])
        log.info("selected step %d (validation ROUGE-L %.3f) of %d", sel["best_step"],
                 sel["best_score"], self.total)

    def selection_record(self) -> dict:
        sel = self.selection
        s = self.s
        if s.checkpoint_selection == "last":
            return {"rule": "last", "chosen_step": self.total}
        return {"rule": "best", "metric": "rougeL", "samples": len(self.select_data),
                "eval_steps": s.eval_steps,
                "start_fraction": s.selection_start_fraction,
                "started_at_step": sel["started_at_step"], "chosen_step": sel["best_step"],
                "chosen_score": sel["best_score"], "scores": sel["scores"]}

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
        masks = self.final_masks()
        factors = (self.dec_gate_module.fold_factors()
                   if self.dec_gate_module is not None else None)
        diff = self.prune(masks, factors)
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

    def final_masks(self) -> FinalMasks:
        """The encoder units the gates keep (l0: deterministic masks at the target, the
        gates' own expected sparsity and what the adjustment moved), or none."""
        if not self.l0:
            return FinalMasks(None, None, {})
        target, s = self.spec.target_sparsity, self.s
        expected = float(self.gate_module.expected_sparsity().detach())
        heads, units, info = self.gate_module.deterministic(target, s.sparsity_tolerance)
        report = sparsity_report(expected, info, target, s.gate_miss_tolerance)
        if report["gates_missed_target"]:
            log.warning("the gates' expected sparsity %.4f is %.1f points off the target "
                        "%.2f (more than gate_miss_tolerance %.3f; train longer or raise "
                        "reg_learning_rate); the per-layer rounded mask is at %.4f, the "
                        "adjustment removed %d / restored %d units to reach %.4f",
                        expected, 100 * abs(expected - target), target,
                        s.gate_miss_tolerance, info["sparsity_rounded"], info["units_removed"],
                        info["units_restored"], info["sparsity"])
        return FinalMasks(heads, units, report)

    def prune(self, masks: FinalMasks, factors) -> float | None:
        """Prune the encoder to ``masks`` and fold the decoder gates' ``factors`` into the
        weights, checking that the gated model with its final masks and the pruned / folded
        one give the same logits; returns their max |difference| (None: nothing to do)."""
        if not self.l0 and factors is None:
            return None
        student = self.student
        check = self.collate(self.valid_data[:self.per_device])
        check.pop("labels")
        with torch.no_grad():
            if self.l0:
                self.model.masks.set(*masks_from_indices(masks.heads, masks.units, self.dims,
                                                         self.device))
            if factors is not None:
                self.model.dec_masks.set(*factors)
            masked_logits = student(**check).logits
        for m in (self.model.masks, self.model.dec_masks):
            if m is not None:
                m.remove()
        if self.l0:
            prune_encoder(student, masks.heads, masks.units)
        if factors is not None:
            fold_decoder_gates(student, *factors)
        with torch.no_grad():
            pruned_logits = student(**check).logits
        diff = float((masked_logits - pruned_logits).abs().max())
        if diff > MASK_CHECK_ATOL:
            raise RuntimeError(f"physically pruned logits differ from the masked model's "
                               f"by {diff:.3g} > {MASK_CHECK_ATOL}: the head/FFN "
                               f"surgery or the decoder fold is wrong")
        return diff

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
        """The NASH stage's sidecar (every key as the report reads it)."""
        args, s, spec, pruned = self.args, self.s, self.spec, result.pruned
        report, factors = pruned.masks.report, pruned.decoder_gate_factors
        return make_sidecar(
            "nash", self.job.record(),
            samples={"train": len(self.train_data), "validation": len(self.valid_data)},
            wall_time_s=time.time() - self.t0,
            variant=args.variant,
            # what the report reads (asymprune.records.NashFacts), each fact one name
            facts=records.NashFacts(
                variant=args.variant, protocol=spec.protocol,
                target_sparsity=spec.target_sparsity, reached_sparsity=pruned.reached_sparsity,
                gates_expected_sparsity=report.get("gates_expected_sparsity"),
                mask_sparsity_before_adjustment=report.get("mask_sparsity_before_adjustment"),
                units_removed=report.get("units_removed"),
                units_restored=report.get("units_restored"),
                gates_missed_target=report.get("gates_missed_target"),
                encoder_blocks=tuple(self.enc_blocks), decoder_blocks=tuple(self.dec_blocks),
                parameters=count_parameters(self.student)).to_dict(),
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


def main(argv: list[str] | None = None) -> int:
    # process 0 logs; the others only warn (torch.distributed.run sets RANK)
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
