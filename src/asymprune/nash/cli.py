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

# The docstring above is the stage's --help (build_parser). This module holds the command line:
# the parser, its checks (parse_args) and main; the run itself is nash.recipe.

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from asymprune import settings, settings_io, variants
from asymprune.batching import add_run_arguments
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.nash.job import NashJob, settings_for
from asymprune.nash.recipe import run


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
    add_run_arguments(p)
    o = p.add_argument_group("outputs")
    o.add_argument("--output", required=True, type=Path,
                   help="physically pruned model folder (model, tokenizer, sidecar.json)")
    o.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="resumable checkpoints (kept across reruns)")
    settings_io.add_arguments(p, settings.NashTrain)
    return p


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


def main(argv: list[str] | None = None) -> int:
    # process 0 logs; the others only warn (torch.distributed.run sets RANK)
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
