"""Cut a teacher to a depth variant ``e{E}d{D}``: keep E/6 of its encoder and D/6 of its decoder.

    python -m asymprune.prune_layers --model TEACHER_DIR --variant e3d6 --layer-selection auto \\
        --output results/<preset>/models/<size>/<dataset>/e3d6/pruned

Which blocks survive is ``asymprune.variants.DepthVariant.blocks`` (the authors' tables for
8/12/24-layer stacks under ``auto``/``published``, evenly spaced otherwise); the edit is
``asymprune.surgery.keep_blocks``. The result still needs re-fine-tuning (``asymprune.finetune``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from asymprune.artifacts import atomic_dir
from asymprune.layers import SIXTHS_STRATEGIES
from asymprune.variants import parse_depth
from asymprune.model_record import derive, read_model_record
from asymprune.modeling import count_parameters, load_model, load_tokenizer
from asymprune.provenance import make_sidecar, write_json
from asymprune.surgery import keep_blocks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags, validated: a malformed variant or e6d6 is a usage error (exit 2) naming --variant."""
    p = argparse.ArgumentParser(prog="python -m asymprune.prune_layers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="teacher: a folder written by save_pretrained (model + tokenizer) or a hub id")
    p.add_argument("--variant", required=True,
                   help="depth variant e{E}d{D}, E and D in 1..6 sixths of each stack (not e6d6)")
    p.add_argument("--layer-selection", choices=SIXTHS_STRATEGIES, default="auto",
                   help="the workflow's layer_selection: published = the authors' tables "
                        "(8/12/24 layers only), "
                        "spaced = evenly spaced keeping first and last, auto = published where a "
                        "table exists else spaced (default: %(default)s)")
    p.add_argument("--output", required=True, type=Path,
                   help="folder for the pruned model + tokenizer + sidecar.json")
    args = p.parse_args(argv)
    try:
        variant = parse_depth(args.variant)
    except ValueError as err:
        p.error(f"--variant: {err}")
    if variant.is_teacher:
        p.error("--variant e6d6 keeps every block: the unpruned variant is the teacher itself, "
                "so there is nothing to prune (use the teacher's folder directly)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    n_enc, n_dec = len(model.encoder.block), len(model.decoder.block)
    enc, dec = parse_depth(args.variant).blocks(n_enc, n_dec, args.layer_selection)
    params_before = count_parameters(model)
    keep_blocks(model, enc, dec)
    params_after = count_parameters(model)
    # block removal trains nothing: the parent's phases, the new depth
    record = derive(read_model_record(args.model), len(model.encoder.block),
                    len(model.decoder.block))
    with atomic_dir(args.output) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "sidecar.json", make_sidecar(
            "prune_layers", vars(args), wall_time_s=time.time() - t0,
            variant=args.variant,
            teacher_layers={"encoder": n_enc, "decoder": n_dec},
            kept_blocks={"encoder": list(enc), "decoder": list(dec)},
            parameters={"before": params_before, "after": params_after,
                        "counts_lm_head": False},
            record=record.to_dict()))
    print(f"{args.variant}: kept encoder {list(enc)} of {n_enc}, decoder {list(dec)} of {n_dec}; "
          f"parameters {params_before:,} -> {params_after:,} (without lm_head)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
