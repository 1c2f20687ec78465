"""Does the last hidden-state pair dominate NASH's hidden-state loss, and does it matter whether
it is taken before or after the stack's ``final_layer_norm``?

    .venv/bin/python bench/nash_final_norm.py --teacher results/demo/models/tiny/news/e6d6/model \\
        --student results/demo/models/tiny/news/nash-d3-uniform-l0s30/pruned \\
        --data results/demo/data/news/validation.jsonl
    # the student at the start of the NASH stage: the teacher's blocks 0, 2, 5 of its decoder
    .venv/bin/python bench/nash_final_norm.py --teacher ... --init-decoder-blocks 0 2 5 --data ...

The NASH stage matches each student block's output (the residual stream) to its teacher
block's (``asymprune.nash.objective.BlockOutputs``). A block's output is taken *before*
``final_layer_norm``; Hugging Face's ``hidden_states[-1]``, which the released code distils,
is taken *after* it (RMS-normalised and scaled by the norm's weight). In a pre-norm T5 the
residual stream grows with depth, so the last pair's un-normalised MSE could outweigh every
other pair. For the student written by a NASH run (its ``kept`` blocks in the sidecar), or
the student at the start of the stage (``--init-decoder-blocks``: the teacher with those
decoder blocks), this prints, per stack, each pair's MSE before the norm
(``asymprune.nash.loss.hidden_mse``, averaged over non-padding tokens and d_model), the last
pair's MSE after ``final_layer_norm``, and the last pair's share of the sum either way. The
stage distils the last pair after the norm (``asymprune.nash.objective.final_normed``), chosen on
this measurement (``docs/nash.md``).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from asymprune.modeling import load_model, load_tokenizer
from asymprune.nash.data import tokenized
from asymprune.nash.loss import hidden_mse
from asymprune.nash.objective import BlockOutputs
from asymprune.surgery import keep_blocks


@torch.no_grad()
def measure(teacher, student, enc_pairs, dec_pairs, batches) -> dict:
    """Sum over batches of each pair's MSE (block outputs) and of the last pair's MSE after
    each stack's final_layer_norm; token-weighted, so the result is a per-token average."""
    hooks = {k: BlockOutputs(m) for k, m in (("t_enc", teacher.encoder),
                                             ("t_dec", teacher.decoder),
                                             ("s_enc", student.encoder),
                                             ("s_dec", student.decoder))}
    sums = {"encoder": [0.0] * len(enc_pairs), "decoder": [0.0] * len(dec_pairs),
            "encoder_last_normed": 0.0, "decoder_last_normed": 0.0}
    tokens = {"encoder": 0, "decoder": 0}
    for batch in batches:
        labels = batch.pop("labels")
        teacher(**batch)
        student(**batch)
        masks = {"encoder": batch["attention_mask"].bool(), "decoder": labels != -100}
        for stack, pairs, t_model, s_model in (("encoder", enc_pairs, teacher, student),
                                               ("decoder", dec_pairs, teacher, student)):
            key = stack[:3]
            t, s = hooks[f"t_{key}"].take(), hooks[f"s_{key}"].take()
            n = int(masks[stack].sum())
            tokens[stack] += n
            for i, pair in enumerate(pairs):
                sums[stack][i] += float(hidden_mse(s, t, [pair], masks[stack])) * n
            (si, ti) = pairs[-1]
            t_norm = getattr(t_model, stack).final_layer_norm(t[ti])
            s_norm = getattr(s_model, stack).final_layer_norm(s[si])
            sums[f"{stack}_last_normed"] += float(
                hidden_mse([s_norm], [t_norm], [(0, 0)], masks[stack])) * n
    for h in hooks.values():
        h.remove()
    out = {}
    for stack in ("encoder", "decoder"):
        per = [v / tokens[stack] for v in sums[stack]]
        normed = sums[f"{stack}_last_normed"] / tokens[stack]
        before, after = sum(per), sum(per[:-1]) + normed
        # a stack that matches its teacher exactly has no share to speak of: NaN, not 0
        out[stack] = {"pairs": per, "last_after_final_norm": normed,
                      "last_share_before": per[-1] / before if before else float("nan"),
                      "last_share_after": normed / after if after else float("nan")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, type=Path)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--student", type=Path,
                     help="a NASH stage output folder (pruned model + sidecar.json)")
    who.add_argument("--init-decoder-blocks", type=int, nargs="+", metavar="BLOCK",
                     help="the student at the start of the NASH stage: the teacher keeping "
                          "these decoder blocks (and its whole encoder)")
    p.add_argument("--data", required=True, type=Path, help="validation.jsonl")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--max-source-length", type=int, default=160)
    p.add_argument("--max-target-length", type=int, default=64)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tok = load_tokenizer(args.teacher)
    teacher = load_model(args.teacher).eval()
    if args.student:
        student = load_model(args.student).eval()
        kept = json.loads((args.student / "sidecar.json").read_text())["kept"]
    else:
        kept = {"encoder_blocks": list(range(len(teacher.encoder.block))),
                "decoder_blocks": args.init_decoder_blocks}
        student = keep_blocks(copy.deepcopy(teacher), tuple(kept["encoder_blocks"]),
                              tuple(kept["decoder_blocks"])).eval()
    enc_pairs = list(enumerate(kept["encoder_blocks"]))
    dec_pairs = list(enumerate(kept["decoder_blocks"]))
    rows = tokenized(args.data, tok, args.max_source_length, args.max_target_length,
                     args.samples)
    collate = DataCollatorForSeq2Seq(tok, model=teacher, label_pad_token_id=-100)
    batches = [collate(rows[i:i + 16]) for i in range(0, len(rows), 16)]
    result = measure(teacher, student, enc_pairs, dec_pairs, batches)
    print(f"# {args.student or f'decoder blocks {args.init_decoder_blocks}'} vs "
          f"{args.teacher}, {len(rows)} validation examples")
    for stack, r in result.items():
        pairs = enc_pairs if stack == "encoder" else dec_pairs
        cells = ", ".join(f"{s}<-{t}: {v:.4g}" for (s, t), v in zip(pairs, r["pairs"]))
        print(f"{stack}: per-pair MSE (student<-teacher block) {cells}; last pair after "
              f"final_layer_norm {r['last_after_final_norm']:.4g}; last pair's share of the "
              f"sum: {100 * r['last_share_before']:.1f} % before the norm, "
              f"{100 * r['last_share_after']:.1f} % after")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
