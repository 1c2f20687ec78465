"""NASH stage: shallow decoder by layer selection, narrow encoder by L0 training, then physical
pruning. The pruned model still needs the final fine-tuning (``asymprune.finetune --model``).

    python -m asymprune.nash --teacher results/P/models/S/D/e6d6/model \\
        --train-file .../train.jsonl --validation-file .../validation.jsonl \\
        --variant nash-d3-uniform-l0s30 \\
        --output results/P/models/S/D/nash-d3-uniform-l0s30/pruned \\
        --checkpoint-dir results/P/checkpoints/S/D/nash-d3-uniform-l0s30/nash

1. Student = teacher with D decoder blocks of ``--variant nash-dD-...`` (``layers.select_k``: uniform
   floor((L-1)/(k-1) j), low, high; ``surgery.keep_blocks`` moves the position bias).
   Encoder mode ``layerss{P}`` keeps round((1 - t) L) uniformly chosen encoder blocks instead
   (``asymprune.variants.NashVariant.blocks``).
2. Training (paper section 4.3): KL(teacher || student) on target tokens + 0.001 x encoder
   hidden-state MSE (same layers) + 0.001 x decoder hidden-state MSE (student layer j vs the
   teacher layer it was copied from) + R = l1 (s - t) + l2 (s - t)^2 (encoder mode ``l0s{P}``),
   with t warmed up linearly from 0 over the first ``sparsity_warmup_fraction`` of the steps
   (Table 8, XSum/CNN-DM: reached after 2 of 3 epochs, 0.6667).
   Optimisers: AdamW over the weights (lr 3e-5, Table 8) and the gates (lr 0.01, CoFi's
   convention: gates share the regulariser's learning rate), and a second AdamW with
   ``maximize=True`` over (l1, l2) (lr 0.01, Table 8): gradient ascent on the multipliers.
   A hand-written loop rather than a Trainer subclass: a frozen teacher forward, a loss built
   from hooks on both models, two optimisers (one ascending) and gate state all have to be
   checkpointed together; the Trainer would need overrides of its loss, optimiser creation,
   checkpoint save and load, i.e. most of what it does.
3. Deterministic masks (``gates.deterministic_masks``: each layer keeps its expected number
   of units, highest log_alpha first, then units are moved until the sparsity is within
   ``--sparsity-tolerance`` of the target) and physical pruning (``nash.prune``); the stage
   checks that the masked and the pruned student give the same logits (max |diff| <= 1e-4).

Checkpoints (``--checkpoint-dir``, step-NNNNNNNN/state.pt, newest two kept) hold the student,
gates, multipliers, both optimisers, the AMP scaler, RNG state, the loss history and the step;
a rerun resumes from the newest. SIGTERM saves a checkpoint and exits 143.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import shutil
import signal
import time
from pathlib import Path

import torch
from torch import nn

from asymprune import settings, variants
from asymprune.artifacts import atomic_dir, read_jsonl, write_jsonl
from asymprune.checkpoints import discard_stale, fingerprint
from asymprune.modeling import count_parameters, load_model, load_tokenizer, resolve_device
from asymprune.nash import gates
from asymprune.nash.loss import hidden_mse, kl_distill, total_loss
from asymprune.nash.masking import EncoderGates, EncoderMasks, masks_from_indices
from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity
from asymprune.nash.prune import encoder_widths, prune_encoder
from asymprune.provenance import make_sidecar, write_json
from asymprune.surgery import keep_blocks

log = logging.getLogger("asymprune.nash")

EXIT_PREEMPTED = 143          # 128 + SIGTERM(15)
MASK_CHECK_ATOL = 1e-4        # masked vs physically pruned logits
KEEP_CHECKPOINTS = 2
# Arguments that do not change what is trained: a checkpoint written under other values of
# these is still resumable.
FINGERPRINT_EXCLUDE = {"output", "checkpoint_dir", "save_steps", "logging_steps", "device",
                       "config_key"}


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
                        f"floor((L-1)/(k-1) j), encoder heads + FFN units L0-pruned to 30 %%")
    d = p.add_argument_group("data")
    d.add_argument("--train-file", required=True, type=Path, help="train.jsonl (id, source, target)")
    d.add_argument("--validation-file", required=True, type=Path,
                   help="validation.jsonl: the pruned model's CE / KL are reported on it")
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    o = p.add_argument_group("outputs")
    o.add_argument("--output", required=True, type=Path,
                   help="physically pruned model folder (model, tokenizer, sidecar.json)")
    o.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="resumable checkpoints (kept across reruns)")
    settings.add_arguments(p, settings.NashTrain)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    settings.resolve(settings.NashTrain, args, p)
    try:
        v = variants.parse_nash(args.variant)
    except ValueError as e:
        p.error(f"--variant: {e}")
    # what the id fixes, as plain attributes for the training code and the sidecar
    args.decoder_layers, args.layer_selection = v.decoder_layers, v.layer_selection
    args.encoder_mode, args.target_sparsity = v.encoder_mode, v.target_sparsity
    if args.gate_learning_rate is None:
        args.gate_learning_rate = args.reg_learning_rate
    for flag in ("train_file", "validation_file"):
        if not getattr(args, flag).is_file():
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} does not exist")
    return args


# ---------------------------------------------------------------------------------------------
# data


def load_split(path: Path, tokenizer, args, limit: int | None) -> list[tuple[list[int], list[int]]]:
    rows = read_jsonl(path)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{path} has no examples")
    for i, r in enumerate(rows):
        if not isinstance(r.get("source"), str) or not isinstance(r.get("target"), str):
            raise ValueError(f"{path} row {i} needs string 'source' and 'target' fields")
    src = tokenizer([r["source"] for r in rows], max_length=args.max_source_length,
                    truncation=True)["input_ids"]
    tgt = tokenizer(text_target=[r["target"] for r in rows], max_length=args.max_target_length,
                    truncation=True)["input_ids"]
    return list(zip(src, tgt))


def collate(examples, pad_id: int, device) -> dict[str, torch.Tensor]:
    n_src = max(len(s) for s, _ in examples)
    n_tgt = max(len(t) for _, t in examples)
    ids = torch.full((len(examples), n_src), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n_src), dtype=torch.long)
    labels = torch.full((len(examples), n_tgt), -100, dtype=torch.long)
    for i, (s, t) in enumerate(examples):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, :len(t)] = torch.tensor(t)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "labels": labels.to(device)}


class MicroBatches:
    """Micro-batch m of an endless stream of epochs, each a permutation drawn from
    seed + epoch: any position is reachable directly, so a resumed run sees the same data.
    E.g. 64 examples, batch 4: 16 micro-batches per epoch; m = 37 is epoch 2, batch 5."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = math.ceil(n / batch_size)
        self._epoch, self._perm = -1, None

    def indices(self, m: int) -> list[int]:
        epoch, b = divmod(m, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm[b * self.batch_size:(b + 1) * self.batch_size]


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


# ---------------------------------------------------------------------------------------------
# model


def reached_sparsity(student, dims: EncoderDims) -> tuple[float, int]:
    """Sparsity of the student's (physical) encoder against the teacher's: one param count."""
    heads, units = encoder_widths(student)
    kept = encoder_prunable_params(heads, units, dims)
    return float(sparsity(kept, dims.full_params())), int(kept)


class NashObjective:
    """The loss of one micro-batch, term by term (section 4.3).

    Hooks on every block of both models collect the hidden states; ``terms`` returns
    {loss, kl, enc_mse, dec_mse, ce[, reg, expected_sparsity]}: ``ce`` (the student's
    cross-entropy on the labels) is logged only, the paper's objective has no CE term.
    """

    def __init__(self, student, teacher, enc_pairs, dec_pairs, args, *, gate_module=None,
                 masks=None, lambdas=None):
        self.student, self.teacher = student, teacher
        self.enc_pairs, self.dec_pairs = list(enc_pairs), list(dec_pairs)
        self.args = args
        self.gate_module, self.masks, self.lambdas = gate_module, masks, lambdas
        self.t_enc, self.t_dec = BlockOutputs(teacher.encoder), BlockOutputs(teacher.decoder)
        self.s_enc, self.s_dec = BlockOutputs(student.encoder), BlockOutputs(student.decoder)

    def terms(self, batch, target: float, autocast=contextlib.nullcontext) -> dict:
        args = self.args
        tok = batch["labels"] != -100
        with torch.no_grad(), autocast():
            t_logits = self.teacher(**batch).logits
        t_h_enc, t_h_dec = self.t_enc.take(), self.t_dec.take()
        if self.gate_module is not None:
            self.masks.set(*self.gate_module.sample())
        with autocast():
            out = self.student(**batch)
        kl = kl_distill(out.logits, t_logits, tok, args.kl_temperature, args.kl_direction)
        enc_mse = hidden_mse(self.s_enc.take(), t_h_enc, self.enc_pairs,
                             batch["attention_mask"].bool())
        dec_mse = hidden_mse(self.s_dec.take(), t_h_dec, self.dec_pairs, tok)
        terms = {"kl": kl, "enc_mse": enc_mse, "dec_mse": dec_mse, "ce": out.loss}
        reg = None
        if self.gate_module is not None:
            s_hat = self.gate_module.expected_sparsity()
            reg = gates.lagrangian(s_hat, target, self.lambdas[0], self.lambdas[1])
            terms.update(reg=reg, expected_sparsity=s_hat)
        terms["loss"] = total_loss(kl, enc_mse, dec_mse, reg, args.distill_enc, args.distill_dec)
        return terms

    def remove_hooks(self) -> None:
        for h in (self.t_enc, self.t_dec, self.s_enc, self.s_dec):
            h.remove()


# ---------------------------------------------------------------------------------------------
# checkpoints


def newest_checkpoint(ckpt: Path, fp: dict) -> Path | None:
    """Newest complete checkpoint after discarding those written with other settings or code."""
    discard_stale(ckpt, fp, "step-*")
    done = [p for p in _step_dirs(ckpt) if (p / "state.pt").is_file()]
    return done[-1] if done else None


def _step_dirs(ckpt: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first (``step-NNNNNNNN.tmp-PID`` is a save that
    was cut off: atomic_dir renames only complete ones)."""
    return sorted(p for p in ckpt.glob("step-*") if ".tmp-" not in p.name)


def save_checkpoint(ckpt: Path, step: int, state: dict) -> Path:
    final = ckpt / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        torch.save(state, tmp / "state.pt")
    for old in _step_dirs(ckpt)[:-KEEP_CHECKPOINTS]:
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
def evaluate(student, teacher, data, args, pad_id, device) -> dict[str, float]:
    """Token-averaged CE (labels) and KL to the teacher of the student on ``data``."""
    student.eval()
    ce_sum = kl_sum = 0.0
    tokens = 0
    for i in range(0, len(data), args.batch_size):
        batch = collate(data[i:i + args.batch_size], pad_id, device)
        s = student(**batch)
        t = teacher(**batch)
        mask = batch["labels"] != -100
        n = int(mask.sum())
        ce_sum += float(s.loss) * n
        kl_sum += float(kl_distill(s.logits, t.logits, mask, args.kl_temperature,
                                   args.kl_direction)) * n
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


# ---------------------------------------------------------------------------------------------
# the stage


def run(args: argparse.Namespace, on_step=None) -> int:
    """Train, prune, write ``--output``. ``on_step(step)`` is called after each optimizer step
    (tests use it to interrupt a run)."""
    t0 = time.time()
    device = resolve_device(args.device)
    if args.precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    torch.manual_seed(args.seed)

    tokenizer = load_tokenizer(args.teacher)
    pad_id = tokenizer.pad_token_id
    teacher = load_model(args.teacher).to(device).eval()
    teacher.requires_grad_(False)
    dims = EncoderDims.from_config(teacher.config)
    n_enc, n_dec = len(teacher.encoder.block), len(teacher.decoder.block)
    enc_blocks, dec_blocks = variants.parse_nash(args.variant).blocks(n_enc, n_dec)
    student = keep_blocks(copy.deepcopy(teacher), enc_blocks, dec_blocks)
    student.requires_grad_(True)
    enc_pairs = list(enumerate(enc_blocks))   # (student layer, teacher layer)
    dec_pairs = list(enumerate(dec_blocks))

    train = load_split(args.train_file, tokenizer, args, args.max_train_samples)
    valid = load_split(args.validation_file, tokenizer, args, args.max_eval_samples)
    stream = MicroBatches(len(train), args.batch_size, args.seed)
    if args.max_steps > 0:
        total_steps = args.max_steps
    else:  # e.g. 64 examples / batch 4 = 16 micro-batches/epoch x 20 epochs / accum 2 = 160
        total_steps = math.ceil(math.ceil(args.epochs * stream.per_epoch) / args.grad_accum)
    warmup = round(args.sparsity_warmup_fraction * total_steps)

    l0 = args.encoder_mode == "l0"
    gate_module = masks = None
    if l0:
        gate_module = EncoderGates(dims, init_droprate=args.gate_init_droprate).to(device)
        masks = EncoderMasks(student, dims)
    lambdas = nn.Parameter(torch.zeros(2, device=device))      # (lambda_1, lambda_2)
    groups = [{"params": [p for p in student.parameters()], "lr": args.learning_rate,
               "weight_decay": args.weight_decay}]
    if l0:
        groups.append({"params": list(gate_module.parameters()), "lr": args.gate_learning_rate,
                       "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    # maximize=True: the multipliers climb the Lagrangian while everything else descends it
    lambda_opt = torch.optim.AdamW([lambdas], lr=args.reg_learning_rate, weight_decay=0.0,
                                   maximize=True)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    step, history = 0, []
    resumed = newest_checkpoint(args.checkpoint_dir,
                                fingerprint(args, FINGERPRINT_EXCLUDE, "nash"))
    if resumed is not None:
        state = torch.load(resumed / "state.pt", map_location=device, weights_only=True)
        student.load_state_dict(state["student"])
        if l0:
            gate_module.load_state_dict(state["gates"])
        with torch.no_grad():
            lambdas.copy_(state["lambdas"])
        optimizer.load_state_dict(state["optimizer"])
        lambda_opt.load_state_dict(state["lambda_optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu())
        step, history = state["step"], state["history"]
        log.info("resumed from %s (step %d of %d)", resumed, step, total_steps)

    def checkpoint_state() -> dict:
        return {"step": step, "student": student.state_dict(),
                "gates": gate_module.state_dict() if l0 else None, "lambdas": lambdas.detach(),
                "optimizer": optimizer.state_dict(), "lambda_optimizer": lambda_opt.state_dict(),
                "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "history": history}

    objective = NashObjective(student, teacher, enc_pairs, dec_pairs, args,
                              gate_module=gate_module, masks=masks, lambdas=lambdas)
    autocast = ((lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype
                else contextlib.nullcontext)
    with sigterm_flag() as preempted:
        student.train()
        while step < total_steps:
            target = gates.target_at(step, args.target_sparsity, warmup) if l0 else 0.0
            sums: dict[str, float] = {}
            for a in range(args.grad_accum):
                batch = collate([train[i] for i in stream.indices(step * args.grad_accum + a)],
                                pad_id, device)
                terms = objective.terms(batch, target, autocast)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(
                        f"non-finite NASH loss ({float(loss)}) at optimizer step {step + 1}: "
                        + ", ".join(f"{k} {float(v)}" for k, v in terms.items())
                        + "; lower the learning rates or use fp32")
                scaler.scale(loss / args.grad_accum).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / args.grad_accum
            if args.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(student.parameters(), args.max_grad_norm)
            scaler.step(optimizer)
            if l0:
                scaler.step(lambda_opt)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lambda_opt.zero_grad(set_to_none=True)
            step += 1
            if step % args.logging_steps == 0 or step == total_steps or step == 1:
                entry = {"step": step, **sums}
                if l0:
                    entry.update(target=target, lambda_1=float(lambdas[0].detach()),
                                 lambda_2=float(lambdas[1].detach()))
                history.append(entry)
                log.info("step %d/%d %s", step, total_steps,
                         " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
            if on_step is not None:
                on_step(step)
            if step % args.save_steps == 0 or step == total_steps or preempted[0]:
                save_checkpoint(args.checkpoint_dir, step, checkpoint_state())
            if preempted[0]:
                log.warning("stopped by SIGTERM at step %d; rerun to resume", step)
                return EXIT_PREEMPTED
    objective.remove_hooks()

    # ---- deterministic masks and physical pruning
    student.eval()
    info: dict = {}
    mask_check = None
    expected_final = None
    if l0:
        expected_final = float(gate_module.expected_sparsity().detach())
        kept_heads, kept_units, info = gate_module.deterministic(args.target_sparsity,
                                                                  args.sparsity_tolerance)
        if abs(expected_final - args.target_sparsity) > 0.01:
            log.warning("the gates' expected sparsity %.4f is %.1f points off the target %.2f "
                        "(train longer or raise --reg-learning-rate); the deterministic mask "
                        "rounds to %.4f and then removed %d / restored %d units to reach %.4f",
                        expected_final, 100 * abs(expected_final - args.target_sparsity),
                        args.target_sparsity, info["sparsity_rounded"], info["removed"],
                        info["restored"], info["sparsity"])
        check = collate(valid[:args.batch_size], pad_id, device)
        with torch.no_grad():
            masks.set(*masks_from_indices(kept_heads, kept_units, dims, device))
            masked_logits = student(**check).logits
        masks.remove()
        prune_encoder(student, kept_heads, kept_units)
        with torch.no_grad():
            pruned_logits = student(**check).logits
        mask_check = float((masked_logits - pruned_logits).abs().max())
        if mask_check > MASK_CHECK_ATOL:
            raise RuntimeError(f"physically pruned logits differ from the masked model's by "
                               f"{mask_check:.3g} > {MASK_CHECK_ATOL}: the head/FFN surgery is wrong")
    reached, kept_params = reached_sparsity(student, dims)
    if l0 and abs(reached - args.target_sparsity) > args.sparsity_tolerance:
        raise RuntimeError(f"reached sparsity {reached:.4f} is off the target "
                           f"{args.target_sparsity} by more than {args.sparsity_tolerance}")
    heads, units = encoder_widths(student)
    metrics = evaluate(student, teacher, valid, args, pad_id, device)
    variant = args.variant
    print(f"{variant}: encoder sparsity reached {reached:.4f} (target {args.target_sparsity}); "
          f"heads {heads}, FFN units {units}; decoder blocks {list(dec_blocks)} of {n_dec}; "
          f"validation CE {metrics['ce']:.4f}, KL {metrics['kl']:.4f}")

    student.to("cpu")
    with atomic_dir(args.output) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_jsonl(tmp / "nash_history.jsonl", history)
        write_json(tmp / "nash_masks.json", {
            "encoder_kept_heads": [list(map(int, h)) for h in (kept_heads if l0 else [])],
            "encoder_kept_ffn_units": [list(map(int, u)) for u in (kept_units if l0 else [])]})
        write_json(tmp / "sidecar.json", make_sidecar(
            "nash", vars(args), samples={"train": len(train), "validation": len(valid)},
            wall_time_s=time.time() - t0,
            variant=variant,
            target_sparsity=args.target_sparsity,
            reached_sparsity=reached,
            sparsity_definition="1 - kept / teacher's encoder prunable parameters "
                                "(heads 4*d_model*d_kv, FFN units (3 if gated else 2)*d_model)",
            expected_sparsity_final=expected_final,
            mask_adjustment=info or None,
            masked_vs_pruned_max_abs_diff=mask_check,
            teacher={"path": str(args.teacher), "encoder_layers": n_enc, "decoder_layers": n_dec},
            kept={"encoder_blocks": list(enc_blocks), "decoder_blocks": list(dec_blocks),
                  "encoder_heads_per_layer": heads, "encoder_ffn_units_per_layer": units,
                  "encoder_kept_heads": [list(map(int, h)) for h in kept_heads] if l0 else None},
            parameters={"teacher": count_parameters(teacher), "pruned": count_parameters(student),
                        "encoder_prunable_teacher": dims.full_params(),
                        "encoder_prunable_pruned": kept_params, "counts_lm_head": False},
            training={"steps": total_steps, "sparsity_warmup_steps": warmup,
                      "resumed_from": str(resumed) if resumed else None,
                      "effective_batch": args.batch_size * args.grad_accum,
                      "final_lambdas": [float(x) for x in lambdas.detach()] if l0 else None},
            loss_summary=summarize_history(history),
            validation=metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
