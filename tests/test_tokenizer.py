"""The locally trained tokenizer is the same file in every process (the demo's seeded results
depend on it: a different id order is a different model)."""

import json
import subprocess
import sys

from asymprune import demo_data
from asymprune.artifacts import write_jsonl


def test_two_processes_train_the_same_tokenizer(tmp_path):
    # Before the tokenizer was made canonical, three processes on this corpus wrote three
    # different tokenizer.json files: the same 623 pieces, scores differing around the 15th
    # digit and the last characters in a different order.
    train = tmp_path / "train.jsonl"
    write_jsonl(train, demo_data.generate(2000, seed=0))
    texts = []
    for run in range(3):
        out = tmp_path / f"tok{run}"
        subprocess.run([sys.executable, "-m", "asymprune.tokenizer", "--train-file", str(train),
                        "--vocab-size", "1000", "--output", str(out)], check=True,
                       capture_output=True)
        texts.append((out / "tokenizer.json").read_text())
    assert texts[0] == texts[1] == texts[2]
    vocab = json.loads(texts[0])["model"]["vocab"]
    assert [p for p, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"]
    scores = [s for _, s in vocab[3:]]
    assert scores == sorted(scores, reverse=True)
