"""The typed record evaluate writes: the sidecar chain walked once, then checked on reading."""

from __future__ import annotations

import json

import pytest

from asymprune import records as R

NASH_SIDECAR = {"stage": "nash", "variant": "nash-d2-uniform-l0s30", "protocol": "paper",
                # the NASH stage writes its facts as the record the report reads, one name each
                "facts": {"variant": "nash-d2-uniform-l0s30", "protocol": "paper",
                          "target_sparsity": 0.3, "reached_sparsity": 0.3047,
                          "gates_expected_sparsity": 0.2939,
                          "mask_sparsity_before_adjustment": 0.2891, "units_removed": 4,
                          "units_restored": 1, "gates_missed_target": False,
                          "encoder_blocks": [0, 1, 2, 3, 4, 5], "decoder_blocks": [0, 5],
                          "parameters": 456789},
                "training": {"steps": 320}, "batch": {"effective": 8}}


def finetune(parent, steps=32, effective=32):
    return {"stage": "finetune", "metrics": {"global_step": steps},
            "batch": {"effective": effective}, "parent": parent}


def test_a_nash_model_counts_both_phases_and_keeps_the_stage_facts():
    rec = R.model_record(finetune(NASH_SIDECAR), 6, 2)
    assert [(p.stage, p.steps, p.effective_batch) for p in rec.phases] == [
        ("nash", 320, 8), ("finetune", 32, 32)]
    # 320 x 8 + 32 x 32 = 2,560 + 1,024
    assert (rec.steps, rec.examples) == (352, 3584)
    assert rec.nash.gates_expected_sparsity == pytest.approx(0.2939)
    assert (rec.nash.units_removed, rec.nash.units_restored) == (4, 1)
    assert rec.nash.decoder_blocks == (0, 5)
    # through JSON and back, checked
    again = R.ModelRecord.from_dict("x", json.loads(json.dumps(rec.to_dict())))
    assert again == rec


def test_refinetuned_teacher_and_hub_models():
    pruned = {"stage": "prune_layers", "kept_blocks": {"encoder": [0], "decoder": [0]}}
    rec = R.model_record(finetune(pruned, steps=10, effective=64), 1, 1)
    assert [(p.stage, p.examples) for p in rec.phases] == [("finetune", 640)] and rec.nash is None
    teacher = R.model_record(finetune(None, steps=500), 6, 6)
    assert teacher.phases == () and teacher.examples == 0  # the teacher's own training
    assert R.model_record(None, 8, 8).phases == ()  # a hub model without a sidecar


def test_a_stage_the_record_does_not_know_is_an_error():
    with pytest.raises(ValueError, match="unknown stage 'distil'"):
        R.model_record(finetune({"stage": "distil"}), 6, 6)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("phases"), "has no 'phases'"),
    (lambda d: d.update(decoder_layers="2"), "decoder_layers must be int"),
    (lambda d: d["phases"][0].update(stage="train"), r"phases\[0\].stage must be one of"),
    (lambda d: d["phases"][0].update(steps=-1), r"phases\[0\].steps must be >= 0"),
    (lambda d: d["nash"].update(reached_sparsity=1.5), "reached_sparsity must be a fraction"),
    (lambda d: d["nash"].update(gates_missed_target="no"), "gates_missed_target must be"),
    (lambda d: d["nash"].update(extra=1), r"unknown field\(s\) \['extra'\]"),
    (lambda d: d["nash"].update(protocol="code"), r"protocol must be one of \('paper', "
                                                  r"'released'\)"),
])
def test_from_dict_names_the_bad_field(change, message):
    d = R.model_record(finetune(NASH_SIDECAR), 6, 2).to_dict()
    change(d)
    with pytest.raises(ValueError, match=message):
        R.ModelRecord.from_dict("eval.json: record", d)


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
                       identical_share=None, record=R.model_record(None, 6, 6))
    again = R.EvalRecord.from_dict("e.json", json.loads(json.dumps(rec.to_dict())))
    assert again == rec and again.rouge2_ci95 == (19.0, 21.0)
    bad = rec.to_dict()
    del bad["metrics"]["gen_len"]
    with pytest.raises(ValueError, match="e.json: metrics has no 'gen_len'"):
        R.EvalRecord.from_dict("e.json", bad)


def test_a_nash_sidecar_of_the_old_format_asks_for_a_rerun():
    old = {k: v for k, v in NASH_SIDECAR.items() if k != "facts"}
    with pytest.raises(ValueError, match="no 'facts'.*rerun its NASH stage"):
        R.model_record(finetune(old), 6, 2)
