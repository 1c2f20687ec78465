"""Train a T5-style tokenizer locally (the offline demo has no hub to download one from).

Unigram model with Metaspace pre-tokenization, as T5's SentencePiece tokenizer; ids 0/1/2 are
<pad>/</s>/<unk> as in T5, so ``decoder_start_token_id = pad = 0`` works unchanged, and every
encoded text ends with </s>.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from asymprune.artifacts import atomic_dir, read_jsonl
from asymprune.provenance import make_sidecar, write_json

SPECIALS = ["<pad>", "</s>", "<unk>"]


# Decimals kept of each piece's log-probability. The Unigram trainer sums in an order that
# changes from process to process (its hash maps are seeded per process), so the same corpus gives
# the same pieces with scores that differ around the 15th digit, and pieces with equal scores in
# either order: different ids, so a "seeded" demo was not reproducible. The noise is ~1e-15 on
# scores of about -2 to -12; rounding to 1e-6 lands two runs on different sides of a rounding
# edge with probability ~ pieces x 2e-15 / 1e-6, about 1e-6 for this demo's 623 pieces.
SCORE_DECIMALS = 6
TAIL_STEP = 1e-4  # tokenizers' Unigram trainer: the score step between appended characters


def canonical(tok: Tokenizer) -> Tokenizer:
    """The trained Unigram model with rounded scores and its non-special pieces ordered by
    (score descending, piece): the same corpus then gives the same file in every process."""
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    specials = [[p, s] for p, s in vocab if p in SPECIALS]
    pieces = sorted(([p, round(s, SCORE_DECIMALS)] for p, s in vocab if p not in SPECIALS),
                    key=lambda ps: (-ps[1], ps[0]))
    # The trainer appends the characters it must keep but did not score below every piece, at
    # scores 1e-4 apart, in its hash set's order. A single character competes with no other in
    # a segmentation, so which of those scores each one gets changes nothing: hand them out in
    # character order.
    chars = [ps for ps in pieces if len(ps[0]) == 1]  # by score, highest first
    start = len(chars) - 1  # the appended run: chars[start:], each 1e-4 below the one before
    while start > 0 and abs(chars[start - 1][1] - chars[start][1] - TAIL_STEP) < 1e-7:
        start -= 1
    if start < len(chars) - 1:
        for ps, c in zip(chars[start:], sorted(ps[0] for ps in chars[start:])):
            ps[0] = c  # the same score list, handed out in character order
        pieces.sort(key=lambda ps: (-ps[1], ps[0]))
    spec["model"]["vocab"] = specials + pieces
    spec["model"]["unk_id"] = [p for p, _ in spec["model"]["vocab"]].index("<unk>")
    return Tokenizer.from_str(json.dumps(spec))


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok = canonical(tok)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=1_000_000)
    assert (fast.pad_token_id, fast.eos_token_id, fast.unk_token_id) == (0, 1, 2), \
        "special token ids must follow T5: <pad>=0, </s>=1, <unk>=2"
    return fast


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asymprune.tokenizer", description=__doc__)
    p.add_argument("--train-file", required=True, type=Path,
                   help="JSONL with 'source' and 'target' (the data stage's train split)")
    p.add_argument("--vocab-size", type=int, default=2000, help="Unigram vocabulary size")
    p.add_argument("--output", required=True, type=Path, help="folder for save_pretrained")
    args = p.parse_args(argv)
    t0 = time.time()
    rows = read_jsonl(args.train_file)
    if not rows:
        raise ValueError(f"{args.train_file} has no rows to train a tokenizer on")
    texts = [t for r in rows for t in (r["source"], r["target"])]
    tok = train_tokenizer(texts, args.vocab_size)
    with atomic_dir(args.output) as tmp:
        tok.save_pretrained(tmp)
        write_json(tmp / "sidecar.json", make_sidecar(
            "tokenizer", vars(args), samples={"texts": len(texts)}, wall_time_s=time.time() - t0,
            vocab_size=len(tok)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
