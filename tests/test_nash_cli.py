"""`python -m asymprune.nash` end to end on the tiny model: target reached, outputs reload,
checkpoints resume to the same result, other encoder modes, flag validation."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal

import pytest
import torch
from transformers import T5ForConditionalGeneration

from asymprune import finetune
from asymprune.modeling import LAYER_SHAPES_KEY, count_parameters, load_model
from asymprune.nash import cli as nash
from asymprune.nash import recipe
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
            "--effective-batch-size", "4", "--per-device-batch-size", "4",
            "--max-source-length", "48", "--max-target-length", "16",
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
    facts = side["record"]["nash"]
    assert side["stage"] == "nash" and side["variant"] == "nash-d3-uniform-l0s30"
    assert facts["target_sparsity"] == 0.3
    assert abs(facts["reached_sparsity"] - 0.3) <= 0.005          # the demo's bar is 0.01
    assert side["kept"]["decoder_blocks"] == [0, 2, 5]
    assert side["kept"]["encoder_blocks"] == [0, 1, 2, 3, 4, 5]
    assert side["masked_vs_pruned_max_abs_diff"] <= 1e-4
    assert side["training"]["steps"] == 6 and side["training"]["resumed_from"] is None
    # the model's record: the teacher (no sidecar) counts nothing, this stage 6 steps x 4
    assert (side["record"]["encoder_layers"], side["record"]["decoder_layers"]) == (6, 3)
    assert side["record"]["phases"] == [{"stage": "nash", "variant": "nash-d3-uniform-l0s30",
                                         "steps": 6, "effective_batch": 4}]
    assert side["loss_summary"]["last"]["step"] == 6
    assert side["batch"] == {"effective": 4, "per_device": 4, "accumulation": 1,
                             "world_size": 1, "batch_divisor": 1}
    # how the sparsity was reached, as plain fields: the gates' own expectation, the
    # per-layer rounded mask, the units the adjustment moved, and the judgement of the gates
    for key, kind in [("gates_expected_sparsity", float),
                      ("mask_sparsity_before_adjustment", float),
                      ("units_removed", int), ("units_restored", int),
                      ("gates_missed_target", bool)]:
        assert type(facts[key]) is kind, key
    assert facts["gates_missed_target"] == (abs(facts["gates_expected_sparsity"] - 0.3) > 0.02)
    assert side["args"]["gate_miss_tolerance"] == 0.02
    moved = facts["units_removed"] - facts["units_restored"]
    # the adjustment moves units one way only, and removing units (sparser) is what lifts
    # the reached sparsity above the rounded mask's
    assert min(facts["units_removed"], facts["units_restored"]) == 0
    assert (facts["reached_sparsity"] > facts["mask_sparsity_before_adjustment"]) == (moved > 0)
    # the reached sparsity is the one param count applied to the saved model
    model = load_model(out)
    teacher = load_model(teacher_dir)
    dims = EncoderDims.from_config(teacher.config)
    kept = encoder_prunable_params(*encoder_widths(model), dims)
    assert facts["reached_sparsity"] == pytest.approx(sparsity(kept, dims.full_params()))
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


def test_training_follows_the_released_recipe(l0_run, teacher_dir):
    """Frozen shared embedding, linear learning-rate decay, log_alpha clamped to +-ln 100."""
    teacher, model = load_model(teacher_dir), load_model(l0_run / "out")
    assert torch.equal(model.shared.weight, teacher.shared.weight)      # frozen: no update
    # the tiny T5 ties lm_head to it (transformers 5 forces the tie on a config-built T5), so
    # lm_head stays too, as in the released code; FLAN-T5's untied lm_head trains
    assert model.lm_head.weight is model.shared.weight
    block = "encoder.block.1.layer.0.SelfAttention.q.weight"
    assert not torch.equal(model.state_dict()[block], teacher.state_dict()[block])
    side = json.loads((l0_run / "out" / "sidecar.json").read_text())
    assert side["training"]["frozen_embedding_parameters"] == teacher.shared.weight.numel()
    history = [json.loads(line) for line in (l0_run / "out" / "nash_history.jsonl").open()]
    # lr 1e-3 over 6 steps, linear to 0: step k runs at 1e-3 (6 - (k - 1)) / 6
    assert [h["lr"] for h in history] == pytest.approx([1e-3 * (7 - k) / 6 for k in range(1, 7)])
    assert all(h["examples"] == 4 for h in history)
    state = torch.load(l0_run / "ck" / "step-00000006" / "state.pt", weights_only=True)
    heads, ffn = state["gates"]["head_log_alpha"], state["gates"]["ffn_log_alpha"]
    limit = math.log(100) + 1e-6                  # ln 100 rounded to float32: 4.6051702
    assert float(heads.abs().max()) <= limit and float(ffn.abs().max()) <= limit
    # heads started at 10 and were clamped after the first update; 5 more Adam steps at the
    # gate learning rate (= reg_learning_rate, 0.01) move them by at most ~0.05
    assert float(heads.min()) > limit - 0.1


def test_a_gate_miss_is_flagged_and_warned(teacher_dir, news_dir, tmp_path, caplog):
    """2 steps cannot bring the gates to 30 %: the sidecar says so and a warning is logged,
    but the stage still meets the budget by moving units (no error)."""
    args = argv(teacher_dir, news_dir, tmp_path / "out", tmp_path / "ck")
    args[args.index("--max-steps") + 1] = "2"
    with caplog.at_level("WARNING", logger="asymprune.nash"):
        assert nash.main(args) == 0
    side = json.loads((tmp_path / "out" / "sidecar.json").read_text())
    facts = side["record"]["nash"]
    assert facts["gates_missed_target"] is True
    assert facts["gates_expected_sparsity"] < 0.28
    assert facts["units_removed"] > 0 and abs(facts["reached_sparsity"] - 0.3) <= 0.005
    assert any("more than gate_miss_tolerance" in r.getMessage() for r in caplog.records)
    caplog.clear()
    lenient = argv(teacher_dir, news_dir, tmp_path / "out2", tmp_path / "ck",
                   "--gate-miss-tolerance", "0.5")
    lenient[lenient.index("--max-steps") + 1] = "2"
    with caplog.at_level("WARNING", logger="asymprune.nash"):
        assert nash.main(lenient) == 0
    side = json.loads((tmp_path / "out2" / "sidecar.json").read_text())
    facts = side["record"]["nash"]
    assert facts["gates_missed_target"] is False
    assert side["training"]["resumed_from"].endswith("step-00000002")   # a reporting threshold
    assert not any("gate_miss_tolerance" in r.getMessage() for r in caplog.records)


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

    assert recipe.run(nash.parse_args(argv(teacher_dir, news_dir, out, ck)),
                    on_step=sigterm_at_3) == recipe.EXIT_PREEMPTED
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000002", "step-00000003"]
    assert not out.exists()
    with pytest.raises(Interrupt):
        recipe.run(nash.parse_args(argv(teacher_dir, news_dir, out, ck)), on_step=crash_at_5)
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000003", "step-00000004"]
    assert nash.main(argv(teacher_dir, news_dir, out, ck)) == 0
    side = json.loads((out / "sidecar.json").read_text())
    facts = side["record"]["nash"]
    ref = json.loads((l0_run / "out" / "sidecar.json").read_text())
    ref_facts = ref["record"]["nash"]
    assert side["training"]["resumed_from"].endswith("step-00000004")
    assert facts["reached_sparsity"] == ref_facts["reached_sparsity"]
    assert side["kept"] == ref["kept"]
    assert side["loss_summary"] == ref["loss_summary"]
    # the history travels in the checkpoints: every logged step, resumes included
    assert (out / "nash_history.jsonl").read_text() == \
        (l0_run / "out" / "nash_history.jsonl").read_text()
    a = load_model(out).state_dict()
    b = load_model(l0_run / "out").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_half_written_checkpoint_is_set_aside_and_the_previous_one_resumed(
        l0_run, teacher_dir, news_dir, tmp_path, caplog):
    """The uninterrupted run's checkpoints, its newest one cut off mid-file: the rerun sets it
    aside (and a cut-off staging write), resumes step 4 and ends with the same model."""
    out, ck = tmp_path / "out", tmp_path / "ck"
    shutil.copytree(l0_run / "ck", ck)
    state = ck / "step-00000006" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    (ck / "staging" / "step-00000007").mkdir(parents=True)
    with caplog.at_level(logging.INFO):
        assert nash.main(argv(teacher_dir, news_dir, out, ck)) == 0
    assert (f"checkpoint folder {ck / 'step-00000006'} is incomplete (state.pt unreadable"
            in caplog.text)
    assert (ck / "incomplete" / "step-00000006").is_dir()
    assert not (ck / "staging" / "step-00000007").exists()
    side = json.loads((out / "sidecar.json").read_text())
    assert side["training"]["resumed_from"] == str(ck / "step-00000004")
    assert (out / "model.safetensors").read_bytes() == \
        (l0_run / "out" / "model.safetensors").read_bytes()
    assert (out / "nash_history.jsonl").read_text() == \
        (l0_run / "out" / "nash_history.jsonl").read_text()


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
    facts = side["record"]["nash"]
    assert side["kept"]["encoder_blocks"] == enc_blocks
    assert side["kept"]["decoder_blocks"] == [0, 1, 2]
    assert facts["reached_sparsity"] == pytest.approx(reached)
    assert side["variant"] == variant
    model = load_model(tmp_path / "out")
    assert getattr(model.config, LAYER_SHAPES_KEY, None) is None
    assert len(model.encoder.block) == len(enc_blocks)


@pytest.mark.parametrize("variant,objective", [("e3d3-kd", "kl"), ("e6d2-ce", "ce")])
def test_equal_budget_baselines_keep_the_depth_variants_blocks(teacher_dir, news_dir, tmp_path,
                                                                variant, objective):
    """e3d3-kd / e6d2-ce: the blocks prune_layers keeps for e3d3 / e6d2 (6 layers, spaced:
    3 -> 0, 3, 5; 2 -> 0, 5), no gates, the same steps; ce drops the teacher's terms."""
    args = with_variant(argv(teacher_dir, news_dir, tmp_path / "out", tmp_path / "ck"), variant)
    args[args.index("--max-steps") + 1] = "2"
    assert nash.main(args + ["--layer-selection", "auto"]) == 0
    side = json.loads((tmp_path / "out" / "sidecar.json").read_text())
    facts = side["record"]["nash"]
    enc, dec = {"e3d3-kd": ([0, 3, 5], [0, 3, 5]), "e6d2-ce": ([0, 1, 2, 3, 4, 5], [0, 5])}[variant]
    assert (side["kept"]["encoder_blocks"], side["kept"]["decoder_blocks"]) == (enc, dec)
    assert side["variant"] == variant and facts["target_sparsity"] == 0.0
    assert facts["gates_expected_sparsity"] is None and side["training"]["steps"] == 2
    assert side["args"]["prediction_loss"] == objective
    teacher_terms = (side["args"]["distill_enc"], side["args"]["distill_dec"])
    assert teacher_terms == ((0.001, 0.001) if objective == "kl" else (0.0, 0.0))


@pytest.mark.parametrize("extra,message", [
    (["--variant", "nash-d3-uniform-l0s100"], "--variant: NASH variant"),
    (["--variant", "e3d3"], "--variant: variant 'e3d3' is neither nash-d{D}"),
    (["--variant", "e6d6-kd"], "--variant: variant 'e6d6-kd' is neither"),
    (["--sparsity-tolerance", "0.02"], "--sparsity-tolerance: 0.02 is greater than or equal to "
                                       "the maximum of 0.01"),
    (["--per-device-batch-size", "0"], "--per-device-batch-size: 0 is less than the minimum of 1"),
    (["--per-device-batch-size", "3"], "--effective-batch-size: 4 is not a multiple of "
                                       "--per-device-batch-size 3"),
    (["--batch-divisor", "0"], "--batch-divisor must be >= 1"),
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
    assert {"cli.py", "job.py", "recipe.py", "objective.py", "checkpointing.py", "finalise.py",
            "gates.py", "params.py", "prune.py", "loss.py", "masking.py", "modeling.py",
            "surgery.py"} <= names
    # other stages load models through modeling.py, which must not pull the NASH code in
    assert not any(p.parent.name == "nash" for p in stage_modules("finetune"))


def _history(out):
    return [json.loads(line) for line in (out / "nash_history.jsonl").open()]


def test_batch_divisor_keeps_the_objective_and_resumes(teacher_dir, news_dir, tmp_path):
    """--batch-divisor 2 (an OOM retry): 2 x 2 instead of 4 x 1 reads the same 4 examples per
    step and, the token averages being over the whole step, computes the same loss; and a
    checkpoint written without the divisor is resumed with it."""
    def args(name, *extra):
        a = with_variant(argv(teacher_dir, news_dir, tmp_path / name, tmp_path / f"ck-{name}",
                              *extra), "nash-d3-uniform-none")   # no gate noise to differ
        a[a.index("--max-steps") + 1] = "2"
        return a

    assert nash.main(args("whole")) == 0
    assert nash.main(args("halves", "--batch-divisor", "2")) == 0
    whole, halves = _history(tmp_path / "whole"), _history(tmp_path / "halves")
    for a, b in zip(whole, halves):
        assert a["examples"] == b["examples"] == 4
        for key in ("loss", "kl", "enc_mse", "dec_mse"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    side = json.loads((tmp_path / "halves" / "sidecar.json").read_text())
    assert side["batch"] == {"effective": 4, "per_device": 2, "accumulation": 2,
                             "world_size": 1, "batch_divisor": 2}
    a, b = load_model(tmp_path / "whole").state_dict(), load_model(tmp_path / "halves").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    def crash_at_2(step):   # before step 2's checkpoint: step 1's is the newest
        if step == 2:
            raise Interrupt

    first = args("retry", "--save-steps", "1")
    with pytest.raises(Interrupt):
        recipe.run(nash.parse_args(first), on_step=crash_at_2)
    assert nash.main(first + ["--batch-divisor", "2"]) == 0
    side = json.loads((tmp_path / "retry" / "sidecar.json").read_text())
    assert side["training"]["resumed_from"].endswith("step-00000001")
    assert side["batch"]["batch_divisor"] == 2


@pytest.mark.parametrize("extra,message", [
    ([], "setting per_device_batch_size 4 is not divisible by --batch-divisor 3"),
    (["--config-key", "nash.train"],
     "config key nash.train.per_device_batch_size 4 is not divisible by --batch-divisor 3"),
])
def test_batch_divisor_must_divide_the_per_device_batch(teacher_dir, news_dir, tmp_path, extra,
                                                        message):
    with pytest.raises(ValueError, match=message):
        nash.main(argv(teacher_dir, news_dir, tmp_path / "o", tmp_path / "c", "--batch-divisor",
                       "3", *extra))
