"""`python -m asymprune.nash` on two CPU processes (torch.distributed.run, gloo): the effective
batch is kept, every process steps alike, and only process 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from transformers import T5ForConditionalGeneration

from conftest import tiny_config


def test_two_process_ddp_keeps_the_effective_batch_and_writes_once(tiny_tokenizer, news_dir,
                                                                   tmp_path):
    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer))).save_pretrained(teacher)
    tiny_tokenizer.save_pretrained(teacher)
    run = tmp_path / "run"
    out, ck = run / "out", run / "ck"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asymprune.nash", "--teacher", str(teacher),
         "--train-file", str(news_dir / "train.jsonl"),
         "--validation-file", str(news_dir / "validation.jsonl"),
         "--variant", "nash-d3-uniform-l0s30", "--output", str(out), "--checkpoint-dir", str(ck),
         # 4 per device / divisor 2 = 2, x 2 accumulation x 2 processes = 8 examples per step
         "--effective-batch-size", "8", "--per-device-batch-size", "4", "--batch-divisor", "2",
         "--max-steps", "3", "--save-steps", "2", "--logging-steps", "1",
         "--max-source-length", "48", "--max-target-length", "16", "--learning-rate", "1e-3",
         "--max-eval-samples", "4", "--device", "cpu", "--config-key", "nash.train"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    side = json.loads((out / "sidecar.json").read_text())
    facts = side["record"]["nash"]
    assert side["batch"] == {"effective": 8, "per_device": 2, "accumulation": 2,
                             "world_size": 2, "batch_divisor": 2}
    history = [json.loads(line) for line in (out / "nash_history.jsonl").open()]
    assert [h["step"] for h in history] == [1, 2, 3]
    # every optimizer step consumed the effective batch, summed over both processes
    assert all(h["examples"] == 8 for h in history)
    assert abs(facts["reached_sparsity"] - 0.3) <= 0.005
    # the run got past the end-of-training check that both processes hold the same weights,
    # gates and multipliers; the checkpoint holds both processes' RNG states
    state = torch.load(ck / "step-00000003" / "state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 3

    # written once, by process 0: one output folder, one set of checkpoints, one report line
    assert sorted(p.name for p in run.iterdir()) == ["ck", "out"]
    assert sorted(p.name for p in ck.iterdir()) == ["fingerprint.json", "step-00000002",
                                                   "step-00000003"]
    assert list(run.rglob("sidecar.json")) == [out / "sidecar.json"]
    assert list(run.rglob("nash_history.jsonl")) == [out / "nash_history.jsonl"]
    assert not list(run.rglob("*.tmp*"))
    assert proc.stdout.count("encoder sparsity reached") == 1
