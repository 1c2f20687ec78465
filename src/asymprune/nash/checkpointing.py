"""The NASH stage's checkpoints: the files (``step-NNNNNNNN/state.pt``, newest two kept,
written into ``staging/`` and renamed into place when whole), the SIGTERM flag that makes the
loop save one and exit, and :class:`Checkpointing`, the part of ``nash.recipe.NashRecipe``
that saves and resumes the run's state and, with ``checkpoint_selection: best``, scores the
student as it would be pruned and keeps the best one in ``checkpoint_dir/best``."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
from pathlib import Path

import torch
from accelerate.utils import gather_object

from asymprune import rouge
from asymprune.artifacts import atomic_dir
from asymprune.checkpoints import publish, resumable, staging_dir, torch_file_problem
from asymprune.generation import generate
from asymprune.nash.masking import masks_from_indices

log = logging.getLogger("asymprune.nash")

KEEP_CHECKPOINTS = 2
CHECKPOINT_PREFIX = "step"    # step-NNNNNNNN: zero-padded, so names sort by step


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


class Checkpointing:
    """Saving, resuming and selecting the checkpoints of a ``nash.recipe.NashRecipe``: a base
    class of it, whose methods read the state ``NashRecipe.setup`` builds (student, gates,
    multipliers, optimisers, data, accelerator) and the selection's record
    (``self.selection``)."""

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

