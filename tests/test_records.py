"""The typed records: a model's built by the stage that saved it, the others by theirs; all checked
on reading."""

from __future__ import annotations

import json

import pytest

from asymprune import model_record as M
from asymprune import records as R

# what the NASH stage reached, one name each (the record's ``nash``)
FACTS = M.NashFacts.from_dict("facts", {
    "variant": "nash-d2-uniform-l0s30", "protocol": "paper", "target_sparsity": 0.3,
    "reached_sparsity": 0.3047, "gates_expected_sparsity": 0.2939,
    "mask_sparsity_before_adjustment": 0.2891, "units_removed": 4, "units_restored": 1,
    "gates_missed_target": False, "encoder_blocks": [0, 1, 2, 3, 4, 5], "decoder_blocks": [0, 5],
    "parameters": 456789})
# the teacher's own fine-tune (no parent record) counts no phase
TEACHER = M.derive(None, 6, 6)


def test_teacher_prune_refinetune_chain():
    assert TEACHER == M.ModelRecord(6, 6, (), None) and TEACHER.examples == 0
    pruned = M.derive(TEACHER, 6, 2)            # block removal trains nothing
    assert pruned == M.ModelRecord(6, 2, (), None)
    refinetuned = M.derive(pruned, 6, 2, M.Phase("finetune", None, 32, 32))
    assert refinetuned == M.ModelRecord(6, 2, (M.Phase("finetune", None, 32, 32),), None)
    assert (refinetuned.steps, refinetuned.examples) == (32, 1024)   # 32 x 32


def test_teacher_nash_stage_nash_finetune_chain():
    stage = M.derive(TEACHER, 6, 2, M.Phase("nash", "nash-d2-uniform-l0s30", 320, 8), FACTS)
    assert (stage.steps, stage.examples, stage.nash) == (320, 2560, FACTS)   # 320 x 8
    final = M.derive(stage, 6, 2, M.Phase("finetune", None, 32, 32))
    assert [(p.stage, p.variant, p.steps, p.effective_batch) for p in final.phases] == [
        ("nash", "nash-d2-uniform-l0s30", 320, 8), ("finetune", None, 32, 32)]
    # 320 x 8 + 32 x 32 = 2,560 + 1,024; the NASH stage's facts carry over
    assert (final.steps, final.examples) == (352, 3584)
    assert final.nash.gates_expected_sparsity == pytest.approx(0.2939)
    assert (final.nash.units_removed, final.nash.units_restored) == (4, 1)
    assert final.nash.decoder_blocks == (0, 5)
    # a NASH stage run on a hub teacher (no record): its own phase only
    assert M.derive(None, 6, 2, M.Phase("nash", "x", 10, 4), FACTS).examples == 40
    # through JSON and back, checked
    assert M.ModelRecord.from_dict("x", json.loads(json.dumps(final.to_dict()))) == final


def _final():
    stage = M.derive(TEACHER, 6, 2, M.Phase("nash", "nash-d2-uniform-l0s30", 320, 8), FACTS)
    return M.derive(stage, 6, 2, M.Phase("finetune", None, 32, 32))


def test_a_model_folder_sidecar_is_read_back(tmp_path):
    assert M.read_model_record(tmp_path) is None           # a folder without a sidecar
    assert M.read_model_record("google/flan-t5-small") is None   # a hub id
    (tmp_path / "sidecar.json").write_text(json.dumps({"stage": "finetune",
                                                       "record": _final().to_dict()}))
    assert M.read_model_record(tmp_path) == _final()


def test_a_model_sidecar_without_a_record_asks_for_a_rerun(tmp_path):
    (tmp_path / "sidecar.json").write_text(json.dumps({"stage": "prune_layers"}))
    with pytest.raises(ValueError, match=r"sidecar.json has no 'record' .*rerun its "
                                         r"prune_layers stage"):
        M.read_model_record(tmp_path)


def test_a_bad_field_of_a_model_sidecar_names_the_file_and_the_field(tmp_path):
    d = _final().to_dict()
    d["phases"][1]["effective_batch"] = "32"
    (tmp_path / "sidecar.json").write_text(json.dumps({"stage": "finetune", "record": d}))
    with pytest.raises(ValueError, match=r"sidecar.json: record.phases\[1\].effective_batch "
                                         r"must be int"):
        M.read_model_record(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("phases"), "has no 'phases'"),
    (lambda d: d.update(decoder_layers="2"), "decoder_layers must be int"),
    (lambda d: d["phases"][0].update(stage="train"), r"phases\[0\].stage must be one of"),
    (lambda d: d["phases"][0].update(steps=-1), r"phases\[0\].steps must be >= 0"),
    (lambda d: d["nash"].update(reached_sparsity=1.5), "reached_sparsity must be a fraction"),
    (lambda d: d["nash"].update(gates_missed_target="no"), "gates_missed_target must be"),
    (lambda d: d["nash"].update(extra=1), r"unknown field\(s\) \['extra'\]"),
    (lambda d: d.update(steps=3), r"record has unknown field\(s\) \['steps'\]"),
    (lambda d: d["phases"][0].update(examples=9), r"phases\[0\] has unknown field\(s\)"),
    (lambda d: d["nash"].update(protocol="code"), r"protocol must be one of \('paper', "
                                                  r"'released'\)"),
])
def test_from_dict_names_the_bad_field(change, message):
    d = _final().to_dict()
    change(d)
    with pytest.raises(ValueError, match=message):
        M.ModelRecord.from_dict("eval.json: record", d)


def _cell(**kw):
    return R.BenchCell(protocol="paper", mode="fixed", engine="eager", inputs="real",
                       batch_size=1, num_beams=1, source_tokens_mean=16.0, mean_ms=11.0,
                       std_ms=1.0, median_ms=10.5, min_ms=10.0, max_ms=12.0,
                       runs_ms=(10.0, 10.5, 12.0), runs_steps=(4, 4, 4),
                       ms_per_step_median=2.625, spread=0.19, foreign_load=None,
                       load_avg_1m_before=0.2, new_tokens_mean=4.0, new_tokens_max=4,
                       peak_memory_mb=3.5, peak_memory_of="rss", **kw)


def _bench(**kw):
    return R.BenchRecord(size="tiny", dataset="news", variant="e6d3", timed_with=("e6d6", "e6d3"),
                         device_label="cpu", device_name="AMD EPYC", model_source="model",
                         inputs="real", source_tokens=16, dtype="fp32", torch_threads=2,
                         load_avg_1m_end=0.3, params=1234, ct2_export=None, encoder_layers=6,
                         decoder_layers=3, results=(_cell(),), **kw)


def test_a_benchmark_record_goes_through_json_and_back():
    rec = _bench()
    d = json.loads(json.dumps(rec.to_dict()))
    assert "disturbed" not in d["results"][0]  # raw runs: the report judges
    assert R.BenchRecord.from_dict("x.json", d) == rec
    # architecture-only: no data set
    arch = json.loads(json.dumps(_bench().to_dict()))
    del arch["dataset"]
    assert R.BenchRecord.from_dict("a.json", arch, with_dataset=False).dataset is None


@pytest.mark.parametrize("change, message", [
    (lambda d: d["results"][0].pop("runs_ms"), r"x.json: results\[0\] has no 'runs_ms'"),
    (lambda d: d["results"][0].update(batch_size=0), "batch_size must be a positive integer"),
    (lambda d: d["results"][0].update(spread="wide"), "x.json: results.0.: spread must be a"),
    (lambda d: d.update(variant="e6/d3"), "variant must be a name fit for a file name"),
    (lambda d: d.pop("device_label"), "missing top-level 'device_label'"),
    (lambda d: d.pop("timed_with"), "x.json has no 'timed_with'"),
])
def test_a_malformed_benchmark_record_names_the_file_and_the_key(change, message):
    d = json.loads(json.dumps(_bench().to_dict()))
    change(d)
    with pytest.raises(ValueError, match=message):
        R.BenchRecord.from_dict("x.json", d)


def test_an_eval_record_goes_through_json_and_back():
    metrics = {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 30.0, "rougeLsum": 35.0,
               "gen_len": 50.0}
    rec = R.EvalRecord(engine="eager", metrics=metrics, metrics_ci95={"rouge2": [19.0, 21.0]},
                       identical_share=None, record=TEACHER)
    again = R.EvalRecord.from_dict("e.json", json.loads(json.dumps(rec.to_dict())))
    assert again == rec and again.rouge2_ci95 == (19.0, 21.0)
    bad = rec.to_dict()
    del bad["metrics"]["gen_len"]
    with pytest.raises(ValueError, match="e.json: metrics has no 'gen_len'"):
        R.EvalRecord.from_dict("e.json", bad)
