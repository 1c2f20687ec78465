"""Fine-tune a T5 model on a summarization split with the transformers Seq2SeqTrainer.

One entry point for the teacher (``--model`` = hub id or folder, or ``--init-config`` +
``--tokenizer`` to train the demo model from scratch) and for re-fine-tuning after pruning.

Paper defaults (Campos & Zhai, Table 12): effective batch 64 via gradient accumulation,
lr 1e-4 constant, weight decay 0.01, 3 epochs.
  effective batch = per-device batch x accumulation x devices, e.g. 8 x 8 x 1 = 64 or 8 x 2 x 4 = 64.

Long jobs are resumable: checkpoints go to ``--checkpoint-dir`` (never a Snakemake output, so
never deleted by a rerun) and a rerun resumes from the newest complete one (model, optimizer,
scheduler, RNG and data position, all restored by the Trainer). Each checkpoint is written
into ``staging/`` and renamed into place when whole, so a kill mid-save costs only that save;
an incomplete checkpoint folder is set aside, not resumed (``asymprune.checkpoints``). The
sidecar's ``train_loss`` averages every step of the run, resumes included, from the log
history the checkpoints carry. SIGTERM (what SLURM sends before a pre-emption kill) writes a
checkpoint and exits 143. A non-finite loss stops the job
naming the step. ``--batch-divisor`` (Snakemake passes the retry attempt after an OOM) halves
the per-device batch and doubles accumulation, keeping the effective batch.

``checkpoint_selection: best`` keeps the validation-best model instead of the last one, with
the Trainer's own machinery: every ``eval_steps`` it generates greedy summaries of the first
``selection_samples`` validation examples (``predict_with_generate``), scores ROUGE-L with
``asymprune.rouge`` (``compute_metrics``) and at the end reloads the best saved checkpoint
(``load_best_model_at_end``, ``metric_for_best_model: rougeL``); the sidecar records the
chosen step and score. ``label_padding: pad`` pads labels with the pad id instead of -100, so
padding counts in the loss (NASH's released code does; ``docs/nash.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import time
from pathlib import Path

import torch
from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments,
                          T5Config, T5ForConditionalGeneration, TrainerCallback)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from asymprune import rouge, settings, settings_io
from asymprune.artifacts import atomic_dir
from asymprune.batching import add_run_arguments, batch_plan, encode_pairs, label_pad_id
from asymprune.checkpoints import (discard_stale, fingerprint, publish, resumable, staging_dir,
                                   trainer_checkpoint_problems, whole_run_mean)
from asymprune.generation import fresh_cache
from asymprune.model_record import Phase, derive, read_sidecar
from asymprune.modeling import count_parameters, load_model, load_tokenizer, resolve_device
from asymprune.provenance import make_sidecar, write_json

log = logging.getLogger("asymprune.finetune")

EXIT_PREEMPTED = 143  # 128 + SIGTERM(15): the shell's code for "terminated"

# Arguments that change what is trained. A checkpoint written under other values is stale
# and must not be resumed (paths and the OOM batch divisor do not change the result).
FINGERPRINT_EXCLUDE = {"output", "checkpoint_dir", "batch_divisor", "save_steps",
                       "logging_steps", "device", "config_key"}


class NonFiniteLoss(FloatingPointError):
    pass


class GuardedTrainer(Seq2SeqTrainer):
    """Stops at the first NaN/inf loss, naming the optimizer step it happened in, and writes
    each checkpoint atomically: the Trainer saves it into ``<checkpoint-dir>/staging/``, and
    once every process has written its part it is renamed to ``<checkpoint-dir>/checkpoint-N``
    (a kill mid-save leaves only the staging folder, which the next run deletes)."""

    _staging = False

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return str(staging_dir(Path(run_dir))) if self._staging else run_dir

    def _run_epoch(self, *args, **kwargs):
        # Resumed from the last step's checkpoint (killed after the final save, before the
        # model folder): nothing is left to train. The Trainer would still run one step of the
        # epoch it resumes into when max_steps is no whole number of epochs (transformers
        # 5.24: 9 steps at 4 per epoch resume into epoch 3 and train a 10th).
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = staging_dir(run_dir) / name, run_dir / name
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)   # its rotation sees only the staging folder
        finally:
            self._staging = False
        if self.state.best_model_checkpoint == str(staged):   # this step is the best so far
            self.state.best_model_checkpoint = str(final)
            if self.args.should_save:
                self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()   # every process's RNG state is in `staged`
        if self.args.should_save:
            publish(staged, final)
            # by step number: the folder names say the order, whatever the file system's mtime
            rotate_checkpoints(str(run_dir), self.args.save_total_limit,
                               self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(f"non-finite training loss ({loss.item()}) at optimizer step "
                                f"{self.state.global_step + 1}; lower the learning rate or "
                                f"use fp32/bf16 instead of fp16")
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None,
                        **gen_kwargs):
        # generate() sizes its default cache from the encoder depth, which breaks models with
        # a shallower encoder than decoder (asymprune.generation): a fresh cache per batch.
        # Given kwargs replace the Trainer's own (generation_max_length...), so merge them.
        gen_kwargs = {**getattr(self, "_gen_kwargs", {}), **gen_kwargs,
                      "past_key_values": fresh_cache()}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys,
                                       **gen_kwargs)


def rouge_l_metric(tokenizer):
    """``compute_metrics`` for ``predict_with_generate``: ROUGE-L F x 100 of the generated
    summaries against the references (labels decoded; -100 is padding)."""
    def compute(pred) -> dict[str, float]:
        preds, labels = pred.predictions, pred.label_ids
        pad = tokenizer.pad_token_id
        preds = [[t for t in row if t >= 0] for row in preds.tolist()]
        labels = [[t if t >= 0 else pad for t in row] for row in labels.tolist()]
        texts = tokenizer.batch_decode(preds, skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"rougeL": rouge.score(texts, refs)["rougeL"]}
    return compute


def selection_record(t: settings.Training, state) -> dict:
    """The sidecar's account of which checkpoint went on (Trainer state after train)."""
    if t.checkpoint_selection == "last":
        return {"rule": "last", "chosen_step": state.global_step}
    if state.best_model_checkpoint is None or state.best_metric is None:
        raise RuntimeError("checkpoint_selection best, but the Trainer scored no checkpoint")
    scores = [[h["step"], h["eval_rougeL"]] for h in state.log_history if "eval_rougeL" in h]
    return {"rule": "best", "metric": "rougeL", "samples": t.selection_samples,
            "eval_steps": t.eval_steps, "started_at_step": t.eval_steps,
            "chosen_step": int(Path(state.best_model_checkpoint).name.split("-")[-1]),
            "chosen_score": state.best_metric, "scores": scores}


class LogAtSaves(TrainerCallback):
    """Log the loss at every step that saves a checkpoint (after the callbacks that ask for a
    save), so that each checkpoint's log history ends at its own step and a resumed run's first
    log averages exactly the steps since the resume: the whole-run loss then weighs every
    step once (``checkpoints.whole_run_mean``)."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control


class PreemptionCheckpoint(TrainerCallback):
    """On SIGTERM, save a checkpoint at the end of the current step and stop training."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        log.warning("SIGTERM received: writing a checkpoint after this step, then exiting")
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asymprune.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", help="hub id or local folder to start from")
    m.add_argument("--init-config",
                   help="T5Config fields as inline JSON or a .json file: train from scratch "
                        "(needs --tokenizer)")
    m.add_argument("--tokenizer", help="tokenizer folder/id (default: the --model's)")
    d = p.add_argument_group("data")
    d.add_argument("--train-file", required=True, type=Path, help="train.jsonl (id, source, target)")
    d.add_argument("--validation-file", type=Path, help="validation.jsonl for a final eval loss")
    add_run_arguments(p)
    o = p.add_argument_group("outputs")
    o.add_argument("--output", required=True, type=Path, help="final model folder")
    o.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="resumable checkpoints (kept across reruns)")
    settings_io.add_arguments(p, settings.Training)
    return p


def prepare_checkpoint_dir(ckpt: Path, fp: dict) -> str | None:
    """Newest complete Trainer checkpoint, after discarding those of other settings or code
    and setting aside incomplete ones."""
    discard_stale(ckpt, fp, f"{PREFIX_CHECKPOINT_DIR}-*")
    done = resumable(ckpt, PREFIX_CHECKPOINT_DIR, trainer_checkpoint_problems)
    if not done:
        return None
    log.info("resuming from %s", done[-1])
    return str(done[-1])


def build_model(args, t: settings.Training, tokenizer) -> T5ForConditionalGeneration:
    if args.init_config:
        text = args.init_config.strip()
        fields = json.loads(text if text.startswith("{") else Path(text).read_text())
        config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=tokenizer.pad_token_id, **fields)
        torch.manual_seed(t.seed)
        return T5ForConditionalGeneration(config)
    return load_model(args.model)


def tokenized(path: Path, tokenizer, t: settings.Training, limit: int | None):
    import datasets

    ds = datasets.load_dataset("json", data_files={"data": str(path)}, split="data")
    if len(ds) == 0:
        raise ValueError(f"{path} has no examples")
    if limit:
        ds = ds.select(range(min(limit, len(ds))))

    def encode(batch):
        return encode_pairs(tokenizer, batch["source"], batch["target"], t.max_source_length,
                            t.max_target_length)

    return ds.map(encode, batched=True, remove_columns=ds.column_names,
                  desc=f"tokenizing {path.name}")


def main(argv: list[str] | None = None) -> int:
    args, t = settings_io.parse(build_parser(), settings.Training, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.model) == bool(args.init_config):
        raise ValueError("give exactly one of --model (hub id or folder) or --init-config")
    if args.init_config and not args.tokenizer:
        raise ValueError("--init-config (training from scratch) needs --tokenizer")
    use_cuda = resolve_device(args.device).type == "cuda"
    if t.precision == "fp16" and not use_cuda:
        raise ValueError("--precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")

    t0 = time.time()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_device, accum = batch_plan(t.effective_batch_size, t.per_device_batch_size,
                                   args.batch_divisor, world_size, args.config_key)
    # read before training: a parent sidecar of an older format fails now, not at the end
    parent, parent_record = read_sidecar(args.model) if args.model else (None, None)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    model = build_model(args, t, tokenizer)
    train_ds = tokenized(args.train_file, tokenizer, t, t.max_train_samples)
    eval_ds = (tokenized(args.validation_file, tokenizer, t, t.max_eval_samples)
               if args.validation_file else None)
    best = t.checkpoint_selection == "best"
    if best and eval_ds is None:
        raise ValueError("checkpoint_selection best needs --validation-file")
    select_ds = (tokenized(args.validation_file, tokenizer, t, t.selection_samples)
                 if best else None)
    targs = Seq2SeqTrainingArguments(
        output_dir=str(args.checkpoint_dir),
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        use_cpu=not use_cuda,
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if best else "no",
        eval_steps=t.eval_steps if best else None,
        load_best_model_at_end=best,
        metric_for_best_model="rougeL" if best else None,
        greater_is_better=True if best else None,
        predict_with_generate=best,
        generation_max_length=t.max_target_length,
        generation_num_beams=1,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    # process 0 cleans the folder first; the others then find only complete checkpoints
    with targs.main_process_first(local=False, desc="checking checkpoints"):
        fp = fingerprint(settings_io.record(args, t), FINGERPRINT_EXCLUDE, "finetune")
        resume = prepare_checkpoint_dir(args.checkpoint_dir, fp)
    preemption = PreemptionCheckpoint()
    trainer = GuardedTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=select_ds,
        processing_class=tokenizer, compute_metrics=rouge_l_metric(tokenizer) if best else None,
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=label_pad_id(t.label_padding, tokenizer),
            pad_to_multiple_of=8 if use_cuda else None),
        callbacks=[preemption, LogAtSaves()])
    trainer.train(resume_from_checkpoint=resume)
    if preemption.requested:
        log.warning("stopped by SIGTERM at step %d; checkpoint saved in %s; rerun to resume",
                    trainer.state.global_step, args.checkpoint_dir)
        return EXIT_PREEMPTED
    step = trainer.state.global_step
    metrics = {"train_loss": whole_run_mean(trainer.state.log_history, "loss", step),
               "global_step": step}
    selection = selection_record(t, trainer.state)
    # the final eval loss needs no generation
    trainer.compute_metrics, trainer.args.predict_with_generate = None, False
    if eval_ds is not None:
        eval_loss = trainer.evaluate(eval_dataset=eval_ds)["eval_loss"]
        if not math.isfinite(eval_loss):
            raise NonFiniteLoss(f"validation loss is {eval_loss} after training")
        metrics["eval_loss"] = eval_loss
    if not trainer.is_world_process_zero():
        return 0
    # without a parent record this run is the teacher's fine-tune, which the budget does not
    # count; after one it is a re-fine-tune or NASH's final fine-tune
    record = derive(
        parent_record, len(trainer.model.encoder.block), len(trainer.model.decoder.block),
        None if parent_record is None else Phase("finetune", None, step, t.effective_batch_size))
    with atomic_dir(args.output) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "sidecar.json", make_sidecar(
            "finetune", settings_io.record(args, t),
            samples={"train": len(train_ds), "validation": len(eval_ds) if eval_ds else 0},
            wall_time_s=time.time() - t0,
            resumed_from=resume,
            batch={"effective": t.effective_batch_size, "per_device": per_device,
                   "accumulation": accum, "world_size": world_size,
                   "batch_divisor": args.batch_divisor},
            metrics=metrics,
            selection=selection,
            parameters=count_parameters(trainer.model),
            config={"num_layers": model.config.num_layers,
                    "num_decoder_layers": model.config.num_decoder_layers,
                    "d_model": model.config.d_model},
            record=record.to_dict(),
            parent=parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
