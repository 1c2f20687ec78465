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
