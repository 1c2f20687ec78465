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
- ``train``:    the stage, a recipe on accelerate (1 or N processes): distillation + L0
                training, checkpoints, physical pruning, sidecar.

This file imports nothing at module level: ``common.smk`` imports ``asymprune.nash.variants``
while parsing the workflow, which must not pull in torch.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The stage entry point. Imported lazily (see above); the import statement also lets
    ``provenance.stage_code_hash("nash")`` find, and hash, the training code."""
    from asymprune.nash.train import main as train_main

    return train_main(argv)
