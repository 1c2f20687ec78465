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
