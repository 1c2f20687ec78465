"""The contracts' single homes: settings dataclasses (schema, CLI, validation) and the variant
registry, checked without Snakemake."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from asymprune import settings as S
from asymprune import settings_io as IO
from asymprune import variants as V
from asymprune import workflow_config as W

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
TEMPLATE = REPO / "workflow/schemas/config.schema.in.yaml"
PAPER = yaml.safe_load((REPO / "config.yaml").read_text())
MICRO = yaml.safe_load((REPO / "configs/micro.yaml").read_text())

# config block -> the dataclass whose fields it holds
BLOCKS = {("finetune",): S.Training, ("refinetune",): S.Training,
          ("nash", "finetune"): S.Training, ("nash", "train"): S.NashTrain,
          ("nash", "released", "finetune"): S.Training,
          ("nash", "released", "train"): S.NashTrain,
          ("evaluate",): S.Evaluate, ("benchmark",): S.Benchmark, ("report",): S.Report}


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _fields(cls, stage_only=False) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata["stage"] or not stage_only}


@pytest.mark.parametrize("path", sorted(BLOCKS), ids=".".join)
def test_schema_keys_equal_the_dataclass_fields(path):
    schema = W.config_schema(SCHEMA)
    node = schema
    for key in path:
        node = _resolve(schema, node)["properties"][key]
    node = _resolve(schema, node)
    assert set(node["properties"]) == _fields(BLOCKS[path])
    # bounds and defaults come from the dataclass, not from a second copy in the YAML
    raw = yaml.safe_load(TEMPLATE.read_text())
    for key in path:
        raw = raw["properties"][key]
    assert "$ref" in raw and "properties" not in raw


def test_data_blocks_split_the_data_settings_between_data_and_datasets():
    schema = W.config_schema(SCHEMA)
    shared = set(schema["definitions"]["data"]["properties"])
    per_set = set(schema["definitions"]["dataset"]["properties"])
    assert shared == set(S.DATA_SHARED) and shared | per_set == _fields(S.Data)
    assert schema["definitions"]["dataset"]["required"] == ["kind"]


def test_schema_defaults_are_the_dataclass_defaults():
    cfg = copy.deepcopy(MICRO)
    r = W.load(cfg, SCHEMA)
    # a key the preset leaves out gets the dataclass default, in the config and the settings
    assert cfg["evaluate"]["num_beams"] == S.Evaluate().num_beams == r.evaluate.num_beams == 1
    assert cfg["nash"]["train"]["epochs"] == S.NashTrain().epochs == 3.0
    assert cfg["refinetune"] == {"max_steps": 2}  # overrides are not filled: inherited
    assert r.refinetune.max_steps == 2 and r.refinetune.learning_rate == 1.0e-3  # micro finetune


@pytest.mark.parametrize("module,cls", [("finetune", S.Training), ("evaluate", S.Evaluate),
                                        ("benchmark.stage", S.Benchmark), ("data", S.Data)])
def test_stage_flags_are_generated_from_the_dataclass(module, cls):
    import importlib

    mod = importlib.import_module(f"asymprune.{module}")
    captured = {}
    real = IO.add_arguments

    def spy(parser, c, title=None):
        captured["parser"] = parser
        return real(parser, c, title)

    parser = None
    IO.add_arguments = spy
    try:
        if hasattr(mod, "build_parser"):
            parser = mod.build_parser()
        else:
            with pytest.raises(SystemExit):
                mod.parse_args(["--help"])
            parser = captured["parser"]
    finally:
        IO.add_arguments = real
    dests = {a.dest: a for a in parser._actions}
    for name in _fields(cls, stage_only=True):
        assert name in dests, name
        # no second default: "not given" until the dataclass default is applied
        assert dests[name].default is argparse.SUPPRESS, name
    for name in _fields(cls) - _fields(cls, stage_only=True):
        assert name not in dests  # workflow-only settings are not stage flags


def test_nash_stage_flags_are_generated_from_the_dataclass():
    from asymprune.nash.cli import build_parser

    dests = {a.dest for a in build_parser()._actions}
    assert _fields(S.NashTrain) <= dests


def test_parse_merges_defaults_json_and_flags():
    p = argparse.ArgumentParser()
    p.add_argument("--output")
    IO.add_arguments(p, S.Training)
    args, t = IO.parse(p, S.Training, ["--settings", '{"epochs": 2, "learning_rate": 0.5}',
                                       "--learning-rate", "0.25", "--output", "o"])
    assert (t.epochs, t.learning_rate, t.precision) == (2, 0.25, "bf16")
    # the stage's own arguments stay apart from its settings, which are frozen
    assert vars(args) == {"output": "o", "config_key": None}
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.learning_rate = 1.0
    # what a sidecar records: both
    assert IO.record(args, t)["learning_rate"] == 0.25 and IO.record(args, t)["output"] == "o"


@pytest.mark.parametrize("argv,message", [
    (["--learning-rate", "-1"], "--learning-rate: -1.0 is less than or equal to the minimum"),
    (["--settings", '{"learning_rate": -1}', "--config-key", "refinetune"],
     "config key refinetune.learning_rate: -1 is less than or equal to the minimum of 0"),
    (["--settings", '{"epochs": "three"}', "--config-key", "refinetune"],
     "config key refinetune.epochs: 'three' is not of type 'number'"),
    (["--settings", '{"bogus": 1}', "--config-key", "finetune"],
     "config key finetune.bogus: unknown key"),
    (["--effective-batch-size", "60"], "--effective-batch-size: 60 is not a multiple of "
                                       "setting per_device_batch_size 8"),
])
def test_parse_errors_name_the_config_key_or_flag(argv, message, capsys):
    p = argparse.ArgumentParser()
    IO.add_arguments(p, S.Training)
    with pytest.raises(SystemExit):
        IO.parse(p, S.Training, argv)
    assert message in capsys.readouterr().err


def _problems(edit, base=MICRO) -> str:
    cfg = copy.deepcopy(base)
    edit(cfg)
    with pytest.raises(W.ConfigError) as err:
        W.load(cfg, SCHEMA)
    return str(err.value)


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c["refinetune"].update(learning_rate=-1e-4),
     "config key refinetune.learning_rate: -0.0001 is less than or equal to the minimum of 0"),
    (lambda c: c["refinetune"].update(per_device_batch_size=0),
     "config key refinetune.per_device_batch_size: 0 is less than the minimum of 1"),
    (lambda c: c["refinetune"].update(epochs="three"),
     "config key refinetune.epochs: 'three' is not of type 'number'"),
    (lambda c: c["nash"]["finetune"].update(learning_rate=0),
     "config key nash.finetune.learning_rate"),
    (lambda c: c["finetune"].update(learning_rate="1e-4"),
     "YAML reads a number without a dot, like 1e-4, as text: write 1.0e-4"),
    (lambda c: c["finetune"].update(effective_batch_size=24),
     "config key finetune.effective_batch_size: 24 is not a multiple of "
     "finetune.per_device_batch_size 16"),
    # the per-device batch of the re-fine-tune comes from refinetune, the effective from finetune
    (lambda c: c["refinetune"].update(per_device_batch_size=6),
     "config key finetune.effective_batch_size: 16 is not a multiple of "
     "refinetune.per_device_batch_size 6"),
    (lambda c: c["nash"].update(variants=["nash-d7-uniform-l0s30"]),
     "config key nash.variants: nash-d7-uniform-l0s30 keeps 7 decoder blocks but the model has "
     "only 6 (models.micro has 6 encoder + 6 decoder blocks)"),
    (lambda c: c["nash"].update(variants=["nash-d2-uniform-layerss99"]),
     "keeps 0; it must keep between 1 and 5"),
    (lambda c: c["nash"].update(variants=["nash-d2-uniform-l0s0"]),
     "config key nash.variants.0: NASH variant 'nash-d2-uniform-l0s0' is not of the form"),
    (lambda c: c.update(execution={"retries": 5}),
     "config key execution.retries: 5 retries halve finetune.per_device_batch_size 16"),
    (lambda c: c["models"]["micro"]["resources"].update(gpus_per_job=3),
     "config key models.micro.resources.gpus_per_job: 3 GPUs x finetune.per_device_batch_size"),
    (lambda c: c["datasets"].update(qiws={"kind": "local"}),
     "config key datasets.qiws.path: a local data set needs a path"),
    (lambda c: c["datasets"]["news"].update(num_samples={"train": 4}),
     "config key datasets.news.num_samples: a generated data set needs a count for every split"),
    (lambda c: c["datasets"]["news"].update(source_column=3),
     "config key datasets.news.source_column: 3 is not of type 'string'"),
    (lambda c: c.update(layer_selection="published"),
     "config key layer_selection: e6d3 of models.micro (6+6 blocks): no published layer table"),
])
def test_bad_values_and_contradictions_name_their_config_key(edit, expected):
    assert expected in _problems(edit)


def test_nash_depth_is_checked_against_the_flan_t5_depths():
    msg = _problems(lambda c: c.setdefault("nash", {}).update(variants=["nash-d99-uniform-l0s30"]),
                    PAPER)
    for size, n in (("small", 8), ("base", 12), ("large", 24)):
        assert f"(models.{size} has {n} encoder + {n} decoder blocks)" in msg
    # ablations are only checked when they run
    cfg = copy.deepcopy(PAPER)
    cfg.setdefault("nash", {})["ablation_variants"] = ["nash-d9-low-l0s30"]
    W.load(cfg, SCHEMA)
    cfg["nash"]["ablations"] = True
    with pytest.raises(W.ConfigError, match="nash.ablation_variants: nash-d9-low-l0s30 keeps 9"):
        W.load(cfg, SCHEMA)


def test_model_depths():
    assert W.model_depths({"name_or_path": "google/flan-t5-base"}) == (12, 12)
    assert W.model_depths({"name_or_path": "someone/unknown-t5"}) is None
    assert W.model_depths({"init_config": {"num_layers": 4}}) == (4, 4)
    assert W.model_depths({"init_config": {"num_layers": 4, "num_decoder_layers": 2}}) == (4, 2)
    assert W.model_depths({"init_config": {}}) == (6, 6)  # T5Config's default


def test_workflow_config_cli(tmp_path, capsys):
    assert W.main([str(REPO / "configs/demo.yaml"), "--schema", str(SCHEMA)]) == 0
    bad = copy.deepcopy(MICRO)
    bad["refinetune"]["learning_rate"] = -1.0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert W.main([str(tmp_path / "bad.yaml"), "--schema", str(SCHEMA)]) == 1
    assert "config key refinetune.learning_rate" in capsys.readouterr().err


# ---- the variant registry


def test_registry_patterns_agree_with_the_parsers():
    import re

    ids = list(V.PAPER) + ["nash-d3-uniform-l0s30", "nash-d12-high-layerss5", "nash-d1-low-none",
                           "nash-d3-uniform-l0s30-rel", "nash-d1-low-none-rel"]
    bad = ["e7d1", "e6d0", "nash-d0-uniform-l0s30", "nash-d3-mid-l0s30", "nash-d3-low-l0s100",
           "nash-d3-uniform-l0s30-released", "nash-d3-uniform-l0s30-rel-rel", "e6d3-kd-rel"]
    for v in ids:
        assert re.fullmatch(V.ANY_BODY, v) and V.is_valid(v)
    for v in bad:
        assert not re.fullmatch(V.ANY_BODY, v) and not V.is_valid(v)
    pruned = [v for v in V.PAPER if re.fullmatch(V.PRUNED_DEPTH_BODY, v)]
    assert pruned == list(V.PAPER[1:])


def test_groups_and_order():
    assert [V.group(v) for v in ("e6d6", "e6d2", "e3d6", "e2d2", "e3d5",
                                 "nash-d2-low-none")] == [
        "baseline", "decoder", "encoder", "both", "other", "nash"]
    assert V.sort(["nash-d3-uniform-l0s30", "e1d1", "nash-d2-uniform-l0s60", "e4d5", "e6d6",
                   "nash-d2-uniform-l0s30"]) == [
        "e6d6", "e1d1", "e4d5", "nash-d2-uniform-l0s30", "nash-d2-uniform-l0s60",
        "nash-d3-uniform-l0s30"]


def test_the_released_protocol_is_a_suffix_of_the_nash_id():
    v = V.parse_nash("nash-d3-uniform-l0s30-rel")
    assert (v.decoder_layers, v.encoder_mode, v.target_sparsity, v.protocol) == (
        3, "l0", 0.3, "released")
    assert v.id == "nash-d3-uniform-l0s30-rel"
    assert V.protocol("nash-d3-uniform-l0s30") == V.protocol("e6d3-kd") == "paper"
    assert V.group("nash-d3-uniform-l0s30-rel") == "nash"
    # the released protocol right after its paper twin
    assert V.sort(["nash-d3-uniform-l0s30-rel", "nash-d4-uniform-l0s30",
                   "nash-d3-uniform-l0s30"]) == [
        "nash-d3-uniform-l0s30", "nash-d3-uniform-l0s30-rel", "nash-d4-uniform-l0s30"]


# The released code's settings, each pinned to its script (jongwooko/NASH-Pruning-Official).
RELEASED_TRAIN = {
    # scripts/run_NASH.sh (XSUM/CNNDM branch and shared lines)
    "epochs": 3.0, "learning_rate": 3e-5, "reg_learning_rate": 0.01,
    "effective_batch_size": 16, "per_device_batch_size": 16, "max_source_length": 128,
    "seed": 57, "kl_temperature": 2.0, "lr_scheduler": "linear", "freeze_embeddings": True,
    "sparsity_warmup_fraction": 0.3333,     # lagrangian_warmup_epochs=1 of epochs=3
    "selection_start_fraction": 0.3333,     # start_saving_best_epochs=1 of epochs=3
    "eval_steps": 6000,
    # trainer/trainer.py: best ROUGE-L kept; training_step optimises CE (+ R) only
    "checkpoint_selection": "best", "prediction_loss": "ce", "distill_enc": 0.0,
    "distill_dec": 0.0,
    # models/l0_module.py: decoder self/cross heads and FFN units gated too
    "decoder_gates": True,
    # run_prune.py: labels padded to max_length with the pad id; cnndm/xsum targets of
    # task_specific_params' summarization max_length (T5: 200) or 200
    "label_padding": "pad", "max_target_length": 200,
    # run_NASH.sh passes no --weight_decay and no --fp16 (TrainingArguments: 0.0, fp32)
    "weight_decay": 0.0, "precision": "fp32",
}
RELEASED_FINETUNE = {
    # scripts/run_final_FT.sh (XSUM/CNNDM branch and shared lines)
    "epochs": 3.0, "learning_rate": 3e-4, "effective_batch_size": 8, "per_device_batch_size": 8,
    "max_source_length": 512, "seed": 57, "eval_steps": 3000,
    # args.py: scheduler_type defaults to linear; TrainingArguments: warmup 0, weight decay
    # 0, fp32 (the script passes none of them)
    "lr_scheduler": "linear", "warmup_steps": 0, "weight_decay": 0.0, "precision": "fp32",
    # trainer/trainer.py: pruning_type None -> start_saving_best from the first evaluation
    "checkpoint_selection": "best",
    "label_padding": "pad", "max_target_length": 200,     # run_prune.py
}


def test_the_released_protocol_pins_the_released_scripts_values():
    assert S.RELEASED_NASH_TRAIN == RELEASED_TRAIN
    # save_steps is ours (the script saves nothing): the Trainer reloads the best from a save
    assert {k: v for k, v in S.RELEASED_NASH_FINETUNE.items() if k != "save_steps"} == \
        RELEASED_FINETUNE
    assert S.RELEASED_NASH_FINETUNE["save_steps"] % RELEASED_FINETUNE["eval_steps"] == 0
    # the paper grid's -rel variants get exactly these, over whatever nash.train sets
    cfg = copy.deepcopy(PAPER)
    cfg["nash"] = {"train": {"learning_rate": 1.0e-4, "decoder_gates": False}}
    r = W.load(cfg, SCHEMA)
    assert {k: getattr(r.nash_train_released, k) for k in RELEASED_TRAIN} == RELEASED_TRAIN
    assert {k: getattr(r.nash_finetune_released, k) for k in RELEASED_FINETUNE} == \
        RELEASED_FINETUNE
    # ... and the paper protocol keeps its own
    assert (r.nash_train.learning_rate, r.nash_train.decoder_gates) == (1.0e-4, False)
    assert r.nash_finetune.checkpoint_selection == "last"
    assert (r.nash_finetune.learning_rate, r.nash_finetune.weight_decay,
            r.nash_finetune.precision) == (3.0e-5, 0.0, "fp32")   # NASH's, not finetune's
    # nash.released rescales the protocol (the demo does)
    cfg["nash"]["released"] = {"train": {"max_steps": 10}, "finetune": {"learning_rate": 1e-3}}
    r = W.load(cfg, SCHEMA)
    assert r.nash_train_released.max_steps == 10
    assert r.nash_finetune_released.learning_rate == 1e-3


def test_nash_blocks():
    assert V.parse_nash("nash-d3-uniform-l0s30").blocks(6, 12) == (tuple(range(6)), (0, 5, 11))
    # 6 layers at 30 %: round(0.7 * 6 = 4.2) = 4 blocks, uniform floor(5/3 j) = 0, 1, 3, 5
    assert V.parse_nash("nash-d2-low-layerss30").blocks(6, 6) == ((0, 1, 3, 5), (0, 1))
    with pytest.raises(ValueError, match="keeps 4 decoder blocks but the model has only 3"):
        V.parse_nash("nash-d4-high-none").blocks(6, 3)


# ---- the committed schema and the layering of blocks


def test_the_committed_schema_is_what_the_generator_writes():
    """workflow/schemas/config.schema.yaml is generated (`make schema`); the workflow reads
    it as committed, so it must be current."""
    assert SCHEMA.read_text() == W.schema_text(TEMPLATE), (
        "workflow/schemas/config.schema.yaml is stale: run `make schema` "
        "(python -m asymprune.workflow_config --write-schema) and commit it")
    assert W.config_schema(SCHEMA) == W.generate_schema(TEMPLATE)


def test_schema_enums_come_from_the_constants():
    from asymprune.flan_t5 import SIZES as FLAN_SIZES
    from asymprune.layers import SIXTHS_STRATEGIES

    defs = W.config_schema(SCHEMA)["definitions"]
    assert defs["layer_selection"]["enum"] == list(SIXTHS_STRATEGIES)
    assert defs["baseline_objective"]["enum"] == list(V.BASELINE_OBJECTIVES)
    assert defs["teacher"]["const"] == V.TEACHER
    assert defs["benchmark"]["properties"]["arch_only"]["items"]["enum"] == list(FLAN_SIZES)
    # nothing copied by hand into the template
    template = TEMPLATE.read_text()
    assert "enum" not in template and "e6d6}" not in template


def test_a_finetune_value_reaches_refinetune_and_nash_finetune():
    cfg = copy.deepcopy(MICRO)
    cfg["finetune"].update(seed=7, warmup_steps=3, learning_rate=2.0e-3)
    cfg["refinetune"] = {"max_steps": 2}
    r = W.load(cfg, SCHEMA)
    # refinetune inherits every key it does not set
    assert (r.refinetune.seed, r.refinetune.warmup_steps, r.refinetune.learning_rate) == (
        7, 3, 2.0e-3)
    assert r.refinetune.max_steps == 2 and r.finetune.max_steps != 2
    # nash.finetune inherits finetune's keys that NASH does not set itself ...
    assert (r.nash_finetune.seed, r.nash_finetune.warmup_steps) == (7, 3)
    # ... but its optimisation settings are NASH's own (the nash.train defaults)
    assert r.nash_finetune.learning_rate == S.NashTrain().learning_rate


def test_nash_train_values_never_reach_nash_finetune():
    cfg = copy.deepcopy(MICRO)
    cfg["nash"].setdefault("train", {}).update(learning_rate=9.0e-4, epochs=1.0)
    cfg["nash"]["finetune"] = {}
    r = W.load(cfg, SCHEMA)
    assert (r.nash_train.learning_rate, r.nash_train.epochs) == (9.0e-4, 1.0)
    assert r.nash_finetune.learning_rate == S.NashTrain().learning_rate != 9.0e-4
    assert r.nash_finetune.epochs == S.NashTrain().epochs
    # set in nash.finetune, it does
    cfg["nash"]["finetune"] = {"learning_rate": 9.0e-4}
    assert W.load(cfg, SCHEMA).nash_finetune.learning_rate == 9.0e-4


def test_the_layering_is_written_where_a_user_reads_the_config():
    schema = W.config_schema(SCHEMA)["properties"]
    assert "`finetune`'s" in schema["refinetune"]["description"]
    nash = schema["nash"]["properties"]
    assert "never reaches nash.finetune" in " ".join(nash["train"]["description"].split())
    assert "`finetune` < NASH's own < this block" in nash["finetune"]["description"]
    text = (REPO / "config.yaml").read_text()
    assert "never reaches nash.finetune" in " ".join(text.replace("#", " ").split())


def test_training_and_nash_train_share_their_common_fields():
    shared = {f.name: f for f in dataclasses.fields(S.Optimisation)}
    for cls in (S.Training, S.NashTrain):
        assert issubclass(cls, S.Optimisation)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in shared.items():
            assert fields[name].default == f.default and fields[name].metadata == f.metadata
