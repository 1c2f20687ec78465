"""bench/engine_speed.py: its verdict and table from hand-made numbers, and one real tiny run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("engine_speed", REPO / "bench/engine_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant, engine, median, encoder=10.0):
    return {"batch_size": 1, "variant": variant, "engine": engine, "median_ms": median,
            "min_ms": median - 1, "max_ms": median + 1, "first_call_ms": 1000.0,
            "encoder_median_ms": encoder, "same_tokens_as_eager": True}


def test_goal_and_speedup_table_from_hand_made_numbers():
    es = _script()
    # e6d6: eager 120 ms, compiled 50 ms -> 2.40x (met); e6d1: eager 40, compiled 20
    rows = [_row("e6d6", "eager", 120.0), _row("e6d6", "compiled", 50.0),
            _row("e6d1", "eager", 40.0), _row("e6d1", "compiled", 20.0)]
    assert es.goal_line(rows) == "# goal compiled >= 2x eager at BS1 (e6d6): 2.40x, met"
    rows[1]["median_ms"] = 80.0
    assert es.goal_line(rows).endswith("1.50x, NOT met")
    table = es.table(rows, ["e6d6", "e6d1"])
    # e6d1 speedup vs e6d6: eager 120 / 40 = 3.00x, compiled 80 / 20 = 4.00x; decoding only
    # (40 - 10) / (20 - 10) = 3.00x
    e6d1 = next(line for line in table.splitlines() if "| e6d1 |" in line)
    assert "| 3.00x | 4.00x | 10 | 3.00x | yes |" in e6d1


@pytest.mark.slow
def test_a_tiny_real_run_checks_tokens_and_writes_json(tmp_path):
    es = _script()
    out = tmp_path / "speed.json"
    rc = es.main(["--variants", "e6d6", "e6d1", "--source-tokens", "16", "--new-tokens", "3",
                  "--runs", "2", "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert rc == 0  # 1 would mean the compiled tokens differ from eager's
    data = json.loads(out.read_text())
    cells = {(r["variant"], r["engine"]) for r in data["results"]}
    assert cells == {(v, e) for v in ("e6d6", "e6d1") for e in ("eager", "compiled")}
    assert all(len(r["runs_ms"]) == 2 for r in data["results"])


def _floor_script():
    spec = importlib.util.spec_from_file_location("step_floor", REPO / "bench/step_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_floor_arithmetic():
    sf = _floor_script()
    # (1189 - 302) / 64 = 13.86 ms per step; 1189 / (302 + 64 x 6) = 1.733
    assert sf.per_step_ms(1189.0, 302.0, 64) == pytest.approx(13.859, abs=1e-3)
    assert sf.best_ratio(1189.0, 302.0, 64, 6.0) == pytest.approx(1189 / 686)


def test_step_floor_reads_what_a_step_reads_and_prints_the_bound(tmp_path, capsys):
    import torch

    from asymprune.benchmark.inputs import build_arch_model

    sf = _floor_script()
    model = build_arch_model("small", "e6d1", "auto", 0, torch.device("cpu"), "fp32")
    pairs = sf.step_operands(model, source_tokens=100)
    # FLAN-T5-small, 1 decoder block: self q k v o, cross q o, wi_0 wi_1 wo, cached cross K
    # and V, then lm_head = 11 + 1 products; values: 4 x 512 x 384 (self q k v o) + 2 x 512 x
    # 384 (cross q, o) + 3 x 512 x 1024 (FFN) + 2 x 100 x 384 (cache) + 32128 x 512
    assert len(pairs) == 12
    n = 4 * 512 * 384 + 2 * 512 * 384 + 3 * 512 * 1024 + 2 * 100 * 384 + 32128 * 512
    assert sum(w.numel() for w, _ in pairs) == n
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({
        "args": {"size": "small", "strategy": "auto", "seed": 0, "source_tokens": 100,
                 "new_tokens": 10, "device": "cpu", "threads": 1},
        "results": [_row("e6d1", "eager", 120.0), _row("e6d1", "compiled", 60.0)]}))
    assert sf.main(["--speed-json", str(speed), "--variant", "e6d1", "--runs", "3",
                    "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "eager / compiled measured: 2.00x" in out
    assert "eager: 120 ms per generate, 11.0 ms per step" in out  # (120 - 10) / 10
    assert "in x out (x @ W): median" in out and "out x in (F.linear): median" in out


def test_nash_final_norm_measures_before_and_after_the_final_layer_norm(tiny_tokenizer,
                                                                        news_dir):
    """A student that is the teacher with its decoder's final_layer_norm weight doubled: every
    block output matches (MSE 0 before the norm), and after the norm the last pair differs by
    exactly the normed teacher output: MSE(2 n, n) = mean(n^2) > 0, all of the sum."""
    import copy

    import torch
    from transformers import DataCollatorForSeq2Seq, T5ForConditionalGeneration

    from asymprune.nash.data import tokenized
    from conftest import tiny_config

    spec = importlib.util.spec_from_file_location("nash_final_norm",
                                                  REPO / "bench/nash_final_norm.py")
    nfn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nfn)
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(tiny_config(len(tiny_tokenizer))).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.decoder.final_layer_norm.weight.mul_(2)
    rows = tokenized(news_dir / "validation.jsonl", tiny_tokenizer, 48, 16, 4)
    batch = DataCollatorForSeq2Seq(tiny_tokenizer, model=teacher)(rows)
    pairs = [(i, i) for i in range(6)]
    r = nfn.measure(teacher, student, pairs, pairs, [dict(batch)])
    assert r["decoder"]["pairs"] == [0.0] * 6 and r["encoder"]["pairs"] == [0.0] * 6
    assert r["encoder"]["last_after_final_norm"] == 0.0
    assert r["decoder"]["last_after_final_norm"] > 0 and r["decoder"]["last_share_after"] == 1.0


def test_profile_shares_group_compiled_graphs_and_count_matrix_products():
    spec = importlib.util.spec_from_file_location("profile_step", REPO / "bench/profile_step.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)

    class Ev:  # what torch.profiler's key_averages() yields: key, own CPU us, calls
        def __init__(self, key, us, count):
            self.key, self.self_cpu_time_total, self.count = key, us, count

    events = [Ev("aten::mm", 6000, 10), Ev("aten::addmm", 1000, 2), Ev("aten::softmax", 500, 4),
              Ev("## Call CompiledFxGraph abc ##", 1500, 1),
              Ev("## Call CompiledFxGraph xyz ##", 1000, 1)]
    total, matmul, rows = ps.shares(events)
    # 6 + 1 + 0.5 + 1.5 + 1 = 10 ms in all, 7 of it in mm/addmm; both graphs on one row
    assert (total, matmul) == (10.0, 7.0)
    assert rows[:2] == [("aten::mm", 6.0, 10), ("compiled graph (fused kernels)", 2.5, 2)]
