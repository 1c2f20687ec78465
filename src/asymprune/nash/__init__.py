"""NASH (Ko et al., 2023): Narrow encoder (L0 width pruning), Shallow decoder (layer selection).

    python -m asymprune.nash --teacher DIR --train-file train.jsonl ... --output DIR

Modules (pure math apart from module editing, as Torch-Pruning separates *what* from *how*):

- ``variants``: the variant ids (``nash-d3-uniform-l0s30``), parser and formatter; no torch.
- ``params``:   THE parameter count of the encoder's prunable units, and sparsity; no torch.
- ``gates``:    hard-concrete gate math, expected sparsity, Lagrangian, target schedule,
                deterministic masks (tensor functions, no modules).
- ``masking``:  the gate parameters and the hooks that apply masks to a live T5 encoder.
- ``data``:     tokenized splits, the example stream and its split over devices and
                micro-batches (the effective batch), the batch plan of an OOM retry.
- ``loss``:     KL prediction distillation, hidden-state MSE, the total objective.
- ``prune``:    physical removal of heads / FFN units (shapes rebuilt by
                ``asymprune.modeling.load_model``).
- ``job``:      one run as the command line gives it, and what its variant id fixes (the
                student's blocks, encoder mode, target sparsity, settings); no torch.
- ``objective``: the student and its gates as one module, the hidden-state hooks and the
                loss of one micro-batch.
- ``checkpointing``: the stage's checkpoints (save, resume, SIGTERM) and checkpoint
                selection (``best``).
- ``finalise``: masks -> physical pruning -> logits check -> validation, and the typed
                records finalisation returns.
- ``recipe``:   the stage, a recipe on accelerate (1 or N processes): setup, the training
                loop, finalisation, the output folder and its sidecar.
- ``cli``:      the command line (``--help`` describes the whole stage) and ``main``.

This file imports nothing at module level: ``common.smk`` imports ``asymprune.nash.variants``
while parsing the workflow, which must not pull in torch.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The stage entry point. Imported lazily (see above); the import statement also lets
    ``provenance.stage_code_hash("nash")`` find, and hash, the training code."""
    from asymprune.nash.cli import main as cli_main

    return cli_main(argv)
