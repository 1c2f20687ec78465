"""`python -m asymprune.nash` end to end on the tiny model: target reached, outputs reload,
checkpoints resume to the same result, other encoder modes, flag validation."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune import finetune
from asymprune.modeling import LAYER_SHAPES_KEY, count_parameters, load_model
from asymprune.nash import train as nash
from asymprune.nash.params import EncoderDims, encoder_prunable_params, sparsity
from asymprune.nash.prune import encoder_widths
from asymprune.provenance import stage_modules
from conftest import tiny_config


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def teacher_dir(tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "model"
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer))).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def argv(teacher, news, out, ckpt, *extra):
    return ["--teacher", str(teacher), "--train-file", str(news / "train.jsonl"),
            "--validation-file", str(news / "validation.jsonl"), "--output", str(out),
            "--checkpoint-dir", str(ckpt), "--variant", "nash-d3-uniform-l0s30", "--max-steps", "6",
            "--batch-size", "4", "--max-source-length", "48", "--max-target-length", "16",
            "--learning-rate", "1e-3", "--sparsity-warmup-fraction", "0.5", "--save-steps", "2",
            "--logging-steps", "1", "--max-eval-samples", "4", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def l0_run(teacher_dir, news_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("l0")
    assert nash.main(argv(teacher_dir, news_dir, root / "out", root / "ck")) == 0
    return root


def test_l0_run_reaches_the_target_and_reloads(l0_run, teacher_dir):
    out = l0_run / "out"
    side = json.loads((out / "sidecar.json").read_text())
    assert side["stage"] == "nash" and side["variant"] == "nash-d3-uniform-l0s30"
    assert side["target_sparsity"] == 0.3
    assert abs(side["reached_sparsity"] - 0.3) <= 0.005          # the demo's bar is 0.01
    assert side["kept"]["decoder_blocks"] == [0, 2, 5]
    assert side["kept"]["encoder_blocks"] == [0, 1, 2, 3, 4, 5]
    assert side["masked_vs_pruned_max_abs_diff"] <= 1e-4
    assert side["training"]["steps"] == 6 and side["training"]["resumed_from"] is None
    assert side["loss_summary"]["last"]["step"] == 6
    # the reached sparsity is the one param count applied to the saved model
    model = load_model(out)
    teacher = load_model(teacher_dir)
    dims = EncoderDims.from_config(teacher.config)
    kept = encoder_prunable_params(*encoder_widths(model), dims)
    assert side["reached_sparsity"] == pytest.approx(sparsity(kept, dims.full_params()))
    assert side["parameters"]["pruned"] == count_parameters(model)
    assert side["parameters"]["encoder_prunable_teacher"] == 52_224
    heads, units = encoder_widths(model)
    assert heads == side["kept"]["encoder_heads_per_layer"]
    assert units == side["kept"]["encoder_ffn_units_per_layer"]
    masks = json.loads((out / "nash_masks.json").read_text())
    assert [len(u) for u in masks["encoder_kept_ffn_units"]] == units
    assert getattr(model.config, LAYER_SHAPES_KEY)["encoder"]["kept_heads"] == \
        masks["encoder_kept_heads"]
    assert model.config.num_decoder_layers == 3 and len(model.decoder.block) == 3


def test_final_finetuning_loads_and_keeps_the_pruned_shapes(l0_run, news_dir, tmp_path):
    out = tmp_path / "ft"
    assert finetune.main(["--model", str(l0_run / "out"), "--train-file",
                          str(news_dir / "train.jsonl"), "--effective-batch-size", "8",
                          "--per-device-batch-size", "8", "--max-steps", "1",
                          "--max-source-length", "48", "--max-target-length", "16",
                          "--output", str(out), "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    before, after = load_model(l0_run / "out"), load_model(out)
    assert encoder_widths(after) == encoder_widths(before)
    assert getattr(after.config, LAYER_SHAPES_KEY) == getattr(before.config, LAYER_SHAPES_KEY)


def test_interrupted_runs_resume_to_the_same_model(l0_run, teacher_dir, news_dir, tmp_path):
    """SIGTERM at step 3 (checkpoint 3, exit 143), a crash at step 5 (newest checkpoint 4),
    then a clean rerun: the result equals the uninterrupted run's, bit for bit."""
    out, ck = tmp_path / "out", tmp_path / "ck"

    def sigterm_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    def crash_at_5(step):
        if step == 5:
            raise Interrupt

    assert nash.run(nash.parse_args(argv(teacher_dir, news_dir, out, ck)),
                    on_step=sigterm_at_3) == nash.EXIT_PREEMPTED
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000002", "step-00000003"]
    assert not out.exists()
    with pytest.raises(Interrupt):
        nash.run(nash.parse_args(argv(teacher_dir, news_dir, out, ck)), on_step=crash_at_5)
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000003", "step-00000004"]
    assert nash.main(argv(teacher_dir, news_dir, out, ck)) == 0
    side = json.loads((out / "sidecar.json").read_text())
    ref = json.loads((l0_run / "out" / "sidecar.json").read_text())
    assert side["training"]["resumed_from"].endswith("step-00000004")
    assert side["reached_sparsity"] == ref["reached_sparsity"]
    assert side["kept"] == ref["kept"]
    assert side["loss_summary"] == ref["loss_summary"]
    a = load_model(out).state_dict()
    b = load_model(l0_run / "out").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_of_other_settings_are_not_resumed(teacher_dir, news_dir, tmp_path):
    ck = tmp_path / "ck"
    first = with_variant(argv(teacher_dir, news_dir, tmp_path / "a", ck), "nash-d3-uniform-none")
    first[first.index("--max-steps") + 1] = "2"
    assert nash.main(first) == 0
    second = list(first)
    second[second.index("--output") + 1] = str(tmp_path / "b")
    second[second.index("--learning-rate") + 1] = "5e-4"
    assert nash.main(second) == 0
    side = json.loads((tmp_path / "b" / "sidecar.json").read_text())
    assert side["training"]["resumed_from"] is None


def with_variant(args, variant):
    args = list(args)
    args[args.index("--variant") + 1] = variant
    return args


@pytest.mark.parametrize("mode,variant,enc_blocks,reached", [
    # 6 layers, 30 %: round(0.7 * 6 = 4.2) = 4 blocks, uniform floor(5/3 j) = 0, 1, 3, 5
    ("layers", "nash-d3-low-layerss30", [0, 1, 3, 5], 1 / 3),
    ("none", "nash-d3-low-none", [0, 1, 2, 3, 4, 5], 0.0),
])
def test_other_encoder_modes(teacher_dir, news_dir, tmp_path, mode, variant, enc_blocks, reached):
    args = with_variant(argv(teacher_dir, news_dir, tmp_path / "out", tmp_path / "ck"), variant)
    args[args.index("--max-steps") + 1] = "2"
    assert nash.main(args) == 0
    side = json.loads((tmp_path / "out" / "sidecar.json").read_text())
    assert side["kept"]["encoder_blocks"] == enc_blocks
    assert side["kept"]["decoder_blocks"] == [0, 1, 2]
    assert side["reached_sparsity"] == pytest.approx(reached)
    assert side["variant"] == variant
    model = load_model(tmp_path / "out")
    assert getattr(model.config, LAYER_SHAPES_KEY, None) is None
    assert len(model.encoder.block) == len(enc_blocks)


@pytest.mark.parametrize("extra,message", [
    (["--variant", "nash-d3-uniform-l0s100"], "--variant: NASH variant"),
    (["--variant", "e3d3"], "--variant: NASH variant"),
    (["--sparsity-tolerance", "0.02"], "--sparsity-tolerance: 0.02 is greater than or equal to "
                                       "the maximum of 0.01"),
    (["--batch-size", "0"], "--batch-size: 0 is less than the minimum of 1"),
    (["--sparsity-warmup-fraction", "1.5"], "--sparsity-warmup-fraction"),
    (["--settings", '{"kl_temperature": -1}', "--config-key", "nash.train"],
     "config key nash.train.kl_temperature: -1 is less than or equal to the minimum of 0"),
])
def test_flag_validation(teacher_dir, news_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as err:
        nash.parse_args(argv(teacher_dir, news_dir, tmp_path / "o", tmp_path / "c", *extra))
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_too_many_decoder_layers_is_an_error(teacher_dir, news_dir, tmp_path):
    args = with_variant(argv(teacher_dir, news_dir, tmp_path / "o", tmp_path / "c"),
                        "nash-d7-uniform-l0s30")
    with pytest.raises(ValueError, match="keeps 7 decoder blocks but the model has only 6"):
        nash.main(args)


def test_stage_hash_covers_the_training_code_and_stays_out_of_other_stages():
    names = {p.name for p in stage_modules("nash")}
    assert {"train.py", "gates.py", "params.py", "prune.py", "loss.py", "masking.py",
            "modeling.py", "surgery.py"} <= names
    # other stages load models through modeling.py, which must not pull the NASH code in
    assert not any(p.parent.name == "nash" for p in stage_modules("finetune"))
