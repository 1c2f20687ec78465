"""FLAN-T5 architectures (Table 1 parameter counts) and the benchmark stage on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch

from asymprune import benchmark
from asymprune.artifacts import write_jsonl
from asymprune.flan_t5 import SIZES, TABLE1, config_kwargs, flan_t5_config
from asymprune.modeling import count_parameters
from conftest import make_texts

TINY = ["--source-tokens", "16", "--new-tokens", "4", "--max-new-tokens", "6", "--runs", "2",
        "--warmup", "1", "--batch-sizes", "1", "2", "--device", "cpu"]


@pytest.mark.parametrize("size", SIZES)
def test_flan_t5_parameter_counts_match_table1(size):
    from transformers import T5ForConditionalGeneration

    with torch.device("meta"):  # shapes only: no memory, no init time
        model = T5ForConditionalGeneration(flan_t5_config(size))
    assert count_parameters(model) == TABLE1[size]["total"]
    assert count_parameters(model.encoder) == TABLE1[size]["encoder"]
    assert count_parameters(model.decoder) == TABLE1[size]["decoder"]
    assert model.config.scale_decoder_outputs is False  # FLAN (T5 v1.1) does not rescale


@pytest.mark.parametrize("size,variant,enc,dec", [
    ("small", "e6d6", 8, 8), ("small", "e3d6", 4, 8), ("small", "e6d2", 8, 2),
    ("small", "e1d1", 1, 1), ("base", "e2d5", 4, 10), ("large", "e1d1", 4, 4),
    ("large", "e5d3", 20, 12)])
def test_variant_layer_counts(size, variant, enc, dec):
    kw = config_kwargs(size, variant)
    assert (kw["num_layers"], kw["num_decoder_layers"]) == (enc, dec)


def test_unknown_size_or_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown FLAN-T5 size"):
        config_kwargs("xl")
    with pytest.raises(ValueError, match="e{E}d{D}"):
        config_kwargs("small", "nash-d3")


def test_fit_length_truncates_and_repeats():
    assert benchmark.fit_length([5, 6, 7, 8, 9], 4, eos_id=1) == [5, 6, 7, 1]
    # 2 tokens repeated to 6 - 1 = 5, then EOS
    assert benchmark.fit_length([5, 6], 6, eos_id=1) == [5, 6, 5, 6, 5, 1]
    with pytest.raises(ValueError):
        benchmark.fit_length([], 4, eos_id=1)


def test_new_token_counts_stop_at_first_eos():
    out = torch.tensor([[0, 5, 6, 1, 0, 0],   # EOS at step 3 -> 3 tokens, padding not counted
                        [0, 5, 6, 7, 8, 9]])  # never stopped -> all 5 steps
    assert benchmark.new_token_counts(out, eos_id=1) == [3, 5]


def test_fixed_mode_asserts_exact_length(monkeypatch):
    # A generate that stops one token early must be caught, not timed.
    monkeypatch.setattr(benchmark, "generate",
                        lambda model, ids, mask, **kw: torch.full((ids.shape[0], 4), 5))
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(AssertionError, match="exactly 4 new tokens"):
        benchmark.time_config(None, ids, ids, {}, mode="fixed", new_tokens=4, eos_id=1,
                              warmup=0, runs=2, device=torch.device("cpu"))


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "test.jsonl"
    write_jsonl(path, ({"id": str(i), "source": "summarize: " + t, "target": t}
                       for i, t in enumerate(make_texts(3, seed=1))))
    return path


def test_model_dir_both_modes(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "bench.json"
    rc = benchmark.main(["--model", str(tiny_model_dir), "--data-file", str(data_file),
                         "--size", "tiny", "--dataset", "toy", "--variant", "e6d6",
                         "--output", str(out), *TINY])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["stage"] == "benchmark"
    assert (d["size"], d["dataset"], d["variant"], d["device_label"]) == ("tiny", "toy", "e6d6",
                                                                         "cpu")
    assert (d["encoder_layers"], d["decoder_layers"]) == (6, 6)
    assert d["params"] > 0 and d["dtype"] == "fp32" and d["device_name"]
    assert d["inputs"] == "data-file" and d["source_tokens"] == 16
    assert [(r["mode"], r["batch_size"]) for r in d["results"]] == [
        ("fixed", 1), ("fixed", 2), ("natural", 1), ("natural", 2)]
    for r in d["results"]:
        assert len(r["runs_ms"]) == 2
        assert r["mean_ms"] == pytest.approx(sum(r["runs_ms"]) / 2)
        assert min(r["runs_ms"]) <= r["median_ms"] <= max(r["runs_ms"])
        assert r["std_ms"] >= 0
        if r["mode"] == "fixed":
            assert r["new_tokens_mean"] == 4
        else:
            assert 1 <= r["new_tokens_mean"] <= 6
    assert d["args"]["runs"] == 2 and "versions" in d and "code_version" in d


def test_arch_only_flan_small(tmp_path):
    out = tmp_path / "arch.json"
    assert benchmark.main(["--arch", "small", "--variant", "e6d6", "--output", str(out),
                           *TINY]) == 0
    d = json.loads(out.read_text())
    assert d["params"] == TABLE1["small"]["total"]
    assert (d["size"], d["variant"], d["dataset"], d["model_source"]) == ("small", "e6d6", None,
                                                                         "arch")
    assert [r["mode"] for r in d["results"]] == ["fixed", "fixed"]  # arch default: fixed only
    assert all(r["new_tokens_mean"] == 4 for r in d["results"])


@pytest.mark.parametrize("argv,message", [
    (["--arch", "small"], "needs --variant"),
    (["--arch", "small", "--variant", "nash-d3"], "--variant"),
    (["--arch", "small", "--variant", "e6d6", "--modes", "natural"], "natural mode needs"),
    (["--arch", "small", "--variant", "e6d6", "--runs", "1"],
     "--runs: 1 is less than the minimum of 2"),
    ([], "exactly one of"),
])
def test_cli_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args([*argv, "--output", str(tmp_path / "x.json")])
    assert message in capsys.readouterr().err
