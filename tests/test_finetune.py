import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from asymprune import finetune
from asymprune.checkpoints import whole_run_mean
from asymprune.modeling import load_model

TINY = json.dumps({"d_model": 32, "d_ff": 48, "d_kv": 8, "num_heads": 4, "num_layers": 2,
                   "num_decoder_layers": 2, "feed_forward_proj": "gated-gelu",
                   "dropout_rate": 0.0, "relative_attention_num_buckets": 8})


def argv(news_dir, tok_dir, out, ckpt, *extra):
    return ["--init-config", TINY, "--tokenizer", str(tok_dir),
            "--train-file", str(news_dir / "train.jsonl"),
            "--validation-file", str(news_dir / "validation.jsonl"),
            "--effective-batch-size", "16", "--per-device-batch-size", "8",
            "--learning-rate", "1e-3", "--max-source-length", "64", "--max-target-length", "24",
            "--logging-steps", "1", "--precision", "fp32", "--output", str(out),
            "--checkpoint-dir", str(ckpt), *extra]


def test_batch_plan_keeps_the_effective_batch():
    assert finetune.batch_plan(64, 8, 1, 1) == (8, 8)  # 8 x 8 x 1 = 64
    assert finetune.batch_plan(64, 8, 2, 1) == (4, 16)  # OOM retry: 4 x 16 x 1 = 64
    assert finetune.batch_plan(64, 8, 1, 4) == (8, 2)  # 4 GPUs: 8 x 2 x 4 = 64
    with pytest.raises(ValueError, match="not a multiple"):
        finetune.batch_plan(64, 8, 1, 3)
    with pytest.raises(ValueError, match="not divisible"):
        finetune.batch_plan(64, 8, 3, 1)


def test_train_from_scratch_then_refinetune(news_dir, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "teacher"
    assert finetune.main(argv(news_dir, tiny_tokenizer_dir, out, tmp_path / "ck",
                              "--max-steps", "3", "--save-steps", "2")) == 0
    side = json.loads((out / "sidecar.json").read_text())
    assert side["metrics"]["global_step"] == 3
    assert side["batch"] == {"effective": 16, "per_device": 8, "accumulation": 2,
                             "world_size": 1, "batch_divisor": 1}
    assert side["samples"] == {"train": 64, "validation": 8}
    model = load_model(out)
    assert model.config.num_layers == 2
    # re-fine-tune starts from the saved folder and records its parent
    out2 = tmp_path / "re"
    assert finetune.main(["--model", str(out), "--train-file", str(news_dir / "train.jsonl"),
                          "--effective-batch-size", "16", "--per-device-batch-size", "16",
                          "--max-steps", "1", "--precision", "fp32", "--output", str(out2),
                          "--checkpoint-dir", str(tmp_path / "ck2")]) == 0
    side2 = json.loads((out2 / "sidecar.json").read_text())
    assert side2["parent"]["metrics"]["global_step"] == 3
    # the teacher's own training is not counted; the re-fine-tune's 1 step x 16 examples is
    assert side["record"] == {"encoder_layers": 2, "decoder_layers": 2, "phases": [],
                              "nash": None}
    assert side2["record"] == {"encoder_layers": 2, "decoder_layers": 2, "nash": None,
                               "phases": [{"stage": "finetune", "variant": None, "steps": 1,
                                           "effective_batch": 16}]}


def test_stale_checkpoints_are_not_resumed(news_dir, tiny_tokenizer_dir, tmp_path):
    ck = tmp_path / "ck"
    finetune.main(argv(news_dir, tiny_tokenizer_dir, tmp_path / "a", ck, "--max-steps", "2",
                       "--save-steps", "2"))
    assert (ck / "checkpoint-2").is_dir()
    # another learning rate: the old checkpoint belongs to another run and is discarded
    finetune.main(argv(news_dir, tiny_tokenizer_dir, tmp_path / "b", ck, "--max-steps", "2",
                       "--save-steps", "100", "--learning-rate", "5e-4"))
    side = json.loads((tmp_path / "b/sidecar.json").read_text())
    assert side["resumed_from"] is None
    assert json.loads((ck / "fingerprint.json").read_text())["learning_rate"] == 5e-4


def test_non_finite_loss_stops_naming_the_step(news_dir, tiny_model, tiny_tokenizer, tmp_path):
    with torch.no_grad():
        tiny_model.shared.weight.fill_(float("nan"))
    tiny_model.save_pretrained(tmp_path / "bad")
    tiny_tokenizer.save_pretrained(tmp_path / "bad")
    with pytest.raises(finetune.NonFiniteLoss, match="optimizer step 1"):
        finetune.main(["--model", str(tmp_path / "bad"), "--train-file",
                       str(news_dir / "train.jsonl"), "--effective-batch-size", "8",
                       "--per-device-batch-size", "8", "--max-steps", "2", "--precision", "fp32",
                       "--output", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c")])
    assert not (tmp_path / "o").exists()


def test_whole_run_loss_weighs_each_logged_mean_by_its_steps():
    # each log averages the steps since the previous one: (4 x 1 + 3 x 9 + 2 x 2) / 12
    history = [{"step": 1, "loss": 4.0}, {"step": 10, "loss": 3.0, "grad_norm": 1.0},
               {"step": 12, "loss": 2.0}, {"step": 12, "train_loss": 9.9}]
    assert whole_run_mean(history, "loss", 12) == pytest.approx(35 / 12)
    with pytest.raises(RuntimeError, match=r"steps 1..14 .*\[1, 10, 12\]"):
        whole_run_mean(history, "loss", 14)


def _keep_only_config(folder):
    """What a kill mid-save left with the Trainer's own, non-atomic save: the model's config."""
    for p in folder.iterdir():
        if p.name not in ("config.json", "generation_config.json"):
            p.unlink()


def _truncate_optimizer(folder):
    data = (folder / "optimizer.pt").read_bytes()
    (folder / "optimizer.pt").write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage, why", [(_keep_only_config, "model.safetensors missing"),
                                         (_truncate_optimizer, "optimizer.pt unreadable")])
def test_a_half_written_checkpoint_is_set_aside_and_the_previous_one_resumed(
        news_dir, tiny_tokenizer_dir, tmp_path, caplog, damage, why):
    # logs at steps 1, 2, 4, 5, 6 (first, saves, every 5th): the loss averages are uneven
    steps = ["--max-steps", "6", "--save-steps", "2", "--logging-steps", "5"]
    ref, ck = tmp_path / "ref", tmp_path / "ck"
    assert finetune.main(argv(news_dir, tiny_tokenizer_dir, ref, ck, *steps)) == 0
    assert sorted(p.name for p in ck.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    half = ck / "checkpoint-6"
    damage(half)
    (ck / "staging" / "checkpoint-7").mkdir(parents=True)   # a save that was cut off
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert finetune.main(argv(news_dir, tiny_tokenizer_dir, out, ck, *steps)) == 0
    side = json.loads((out / "sidecar.json").read_text())
    ref_side = json.loads((ref / "sidecar.json").read_text())
    aside = ck / "incomplete" / "checkpoint-6"
    assert side["resumed_from"] == str(ck / "checkpoint-4")
    assert f"checkpoint folder {half} is incomplete ({why}" in caplog.text
    assert f"moved it to {aside}" in caplog.text
    assert aside.is_dir() and not (ck / "staging" / "checkpoint-7").exists()
    # steps 5-6 again from checkpoint 4: the same weights, and the loss of all 6 steps (the
    # Trainer's own train_loss would average steps 5-6 only)
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert side["metrics"]["train_loss"] == ref_side["metrics"]["train_loss"]
    history = json.loads((ck / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 4, 5, 6]


def test_a_run_killed_after_its_last_checkpoint_trains_no_further(news_dir, tiny_tokenizer_dir,
                                                                  tmp_path):
    # 64 examples, 16 per step: 4 steps per epoch, so step 6 ends in the middle of epoch 2
    steps = ["--max-steps", "6", "--save-steps", "2"]
    ref, ck = tmp_path / "ref", tmp_path / "ck"
    assert finetune.main(argv(news_dir, tiny_tokenizer_dir, ref, ck, *steps)) == 0
    # the same job again, as after a kill between the final checkpoint and the model folder
    out = tmp_path / "out"
    assert finetune.main(argv(news_dir, tiny_tokenizer_dir, out, ck, *steps)) == 0
    side = json.loads((out / "sidecar.json").read_text())
    assert side["resumed_from"] == str(ck / "checkpoint-6")
    assert side["metrics"]["global_step"] == 6   # not 7
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


def _run(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "asymprune.finetune", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for_step(proc, step, timeout=120):
    """Read the log until the Trainer reports an optimizer step >= step."""
    deadline = time.time() + timeout
    for line in proc.stdout:
        if "'loss'" in line and "'epoch'" in line:
            _wait_for_step.seen += 1
            if _wait_for_step.seen >= step:
                return
        if time.time() > deadline:
            break
    raise AssertionError("training did not reach the step in time")


def _interrupt_and_resume(news_dir, tok_dir, tmp_path, sig):
    steps = ["--max-steps", "12", "--save-steps", "3"]
    ref = tmp_path / "ref"
    assert finetune.main(argv(news_dir, tok_dir, ref, tmp_path / "ck_ref", *steps)) == 0
    out, ck = tmp_path / "out", tmp_path / "ck"
    proc = _run(argv(news_dir, tok_dir, out, ck, *steps))
    _wait_for_step.seen = 0
    _wait_for_step(proc, 5)
    proc.send_signal(sig)
    proc.stdout.read()
    rc = proc.wait(timeout=120)
    assert not out.exists()  # no half-written model
    if sig == signal.SIGTERM:
        assert rc == finetune.EXIT_PREEMPTED
    else:
        assert rc == -signal.SIGKILL
    saved = sorted(int(p.name.split("-")[1]) for p in ck.glob("checkpoint-*"))
    assert saved, "no checkpoint survived the interruption"
    resumed = _run(argv(news_dir, tok_dir, out, ck, *steps))
    log = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, log
    side = json.loads((out / "sidecar.json").read_text())
    ref_side = json.loads((ref / "sidecar.json").read_text())
    assert side["resumed_from"].endswith(f"checkpoint-{saved[-1]}")
    assert side["metrics"]["global_step"] == 12
    # model, optimizer, scheduler, RNG and data position restored: same result as no interruption
    assert side["metrics"]["eval_loss"] == pytest.approx(ref_side["metrics"]["eval_loss"], abs=1e-4)
    # the loss of all 12 steps, not only of those after the resume
    assert side["metrics"]["train_loss"] == pytest.approx(ref_side["metrics"]["train_loss"],
                                                          rel=1e-6)
    return saved


def test_sigterm_writes_a_checkpoint_and_the_rerun_resumes(news_dir, tiny_tokenizer_dir, tmp_path):
    saved = _interrupt_and_resume(news_dir, tiny_tokenizer_dir, tmp_path, signal.SIGTERM)
    # SIGTERM saved at the step it arrived in (>= 5), not only at the 3-step interval
    assert saved[-1] >= 5


@pytest.mark.drill
def test_sigkill_loses_at_most_one_checkpoint_interval(news_dir, tiny_tokenizer_dir, tmp_path):
    saved = _interrupt_and_resume(news_dir, tiny_tokenizer_dir, tmp_path, signal.SIGKILL)
    assert saved[-1] >= 3


def test_two_process_ddp_keeps_the_effective_batch(news_dir, tiny_tokenizer_dir, tmp_path):
    """The multi-GPU switch (torch.distributed.run), run for real on CPU with the gloo backend."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asymprune.finetune", *argv(news_dir, tiny_tokenizer_dir, out, tmp_path / "ck",
                                            "--max-steps", "3", "--per-device-batch-size", "4",
                                            "--device", "cpu")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    side = json.loads((out / "sidecar.json").read_text())
    # 4 per device x 2 accumulation x 2 processes = 16 = --effective-batch-size
    assert side["batch"] == {"effective": 16, "per_device": 4, "accumulation": 2,
                             "world_size": 2, "batch_divisor": 1}
    assert side["metrics"]["global_step"] == 3


def test_best_checkpoint_selection_keeps_the_validation_best(news_dir, tiny_tokenizer_dir,
                                                             tmp_path, monkeypatch):
    """checkpoint_selection best: the Trainer scores ROUGE-L every eval_steps through our
    compute_metrics and reloads the best checkpoint. A fake ROUGE sequence (the last score
    worse than the one before) must make step 4, not the last step 6, the model that goes on."""
    from safetensors.torch import load_file

    scores = iter([10.0, 30.0, 20.0])         # at steps 2, 4, 6

    def fake_score(predictions, references):
        assert len(predictions) == len(references) == 4   # selection_samples
        return {"rougeL": next(scores)}

    monkeypatch.setattr(finetune.rouge, "score", fake_score)
    out, ck = tmp_path / "best", tmp_path / "ck"
    assert finetune.main(argv(news_dir, tiny_tokenizer_dir, out, ck, "--max-steps", "6",
                              "--save-steps", "2", "--eval-steps", "2",
                              "--checkpoint-selection", "best",
                              "--selection-samples", "4")) == 0
    side = json.loads((out / "sidecar.json").read_text())
    sel = side["selection"]
    assert (sel["rule"], sel["chosen_step"], sel["chosen_score"]) == ("best", 4, 30.0)
    assert sel["scores"] == [[2, 10.0], [4, 30.0], [6, 20.0]]
    saved, best, last = (load_file(p / "model.safetensors")
                         for p in (out, ck / "checkpoint-4", ck / "checkpoint-6"))
    name = "decoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(saved[name], best[name])
    assert not torch.equal(saved[name], last[name])   # training moved on after step 4


def test_label_padding_pad_counts_padding_in_the_loss(tiny_tokenizer):
    """Labels of 2 and 4 tokens in one batch: ignore pads the short one with -100 (2 labels
    out of the loss), pad with T5's pad id 0 (all 8 positions in the cross-entropy)."""
    from transformers import DataCollatorForSeq2Seq

    from asymprune.batching import label_pad_id

    rows = [{"input_ids": [5, 6, 1], "labels": [7, 1]},
            {"input_ids": [5, 1], "labels": [7, 8, 9, 1]}]
    for padding, fill, counted in (("ignore", -100, 6), ("pad", 0, 8)):
        pad_id = label_pad_id(padding, tiny_tokenizer)
        labels = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=pad_id)(rows)["labels"]
        assert labels[0].tolist() == [7, 1, fill, fill]
        assert int((labels != -100).sum()) == counted
