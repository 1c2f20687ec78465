"""bench/gpu_check.py: its CPU-safe parts (the GPU run itself needs a lent GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_help_and_the_gpu_plan():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--help"],
                         capture_output=True, text=True, env=env, timeout=100)
    assert out.returncode == 0 and "--dry" in out.stdout
    gpu = _script().plan(dry=False)
    # what issue 12 asks of the GPU run: the GPU compute types, batch 1 and 16, base and large
    assert gpu["engines"] == ["eager", "compiled", "ct2-float16", "ct2-int8_float16"]
    assert gpu["memory_sizes"] == ["base", "large"] and gpu["arch"] == "base"
    assert gpu["timing"][gpu["timing"].index("--batch-sizes") + 1:][:2] == ["1", "16"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dry_run_on_cpu_writes_its_results(tmp_path):
    gc = _script()
    assert gc.main(["--dry", "--out-dir", str(tmp_path), "--steps", "tokens", "graphs",
                    "memory"]) == 0
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    assert tokens[0]["compiled"]["identical"] and tokens[0]["ct2-float32"]["identical"]
    # the graphs step finds the compiled runner of its call (no CUDA graphs on a CPU: None)
    graphs = json.loads((tmp_path / "graphs.json").read_text())
    assert graphs["runners"] >= 1 and graphs["all_captured"] is None
    memory = json.loads((tmp_path / "memory.json").read_text())
    assert [r["source_tokens"] for r in memory] == [32, 64]
    assert json.loads((tmp_path / "summary.json").read_text())["tokens_ok"] is True
