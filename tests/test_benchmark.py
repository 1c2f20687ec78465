"""FLAN-T5 architectures (Table 1 parameter counts) and the benchmark stage on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch

from asymprune.benchmark import inputs, stage, timing
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
    assert inputs.fit_length([5, 6, 7, 8, 9], 4, eos_id=1) == [5, 6, 7, 1]
    # 2 tokens repeated to 6 - 1 = 5, then EOS
    assert inputs.fit_length([5, 6], 6, eos_id=1) == [5, 6, 5, 6, 5, 1]
    with pytest.raises(ValueError):
        inputs.fit_length([], 4, eos_id=1)


def test_new_token_counts_stop_at_first_eos():
    out = torch.tensor([[0, 5, 6, 1, 0, 0],   # EOS at step 3 -> 3 tokens, padding not counted
                        [0, 5, 6, 7, 8, 9]])  # never stopped -> all 5 steps
    assert timing.new_token_counts(out, eos_id=1) == [3, 5]


def test_truncate_keeps_real_lengths():
    assert inputs.truncate([5, 6, 7, 8, 9], 4, eos_id=1) == [5, 6, 7, 1]
    assert inputs.truncate([5, 6], 6, eos_id=1) == [5, 6, 1]  # short: not repeated


def test_batches_pad_to_the_longest_and_rotate_documents():
    sources = [[5, 1], [5, 6, 7, 1], [8, 1]]
    batches = inputs.make_batches(sources, 2, 3, pad_id=0, device=torch.device("cpu"))
    # batch j holds sources 2j, 2j+1 (cycling): (0, 1), (2, 0), (1, 2)
    ids, mask = batches[0]
    assert ids.tolist() == [[5, 1, 0, 0], [5, 6, 7, 1]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batches[1][0].tolist() == [[8, 1], [5, 1]]  # padded to its own longest: 2
    assert batches[2][0].shape == (2, 4)


def _args(**kw):
    import argparse

    base = dict(new_tokens=4, max_new_tokens=6, warmup=0, runs=4)
    return argparse.Namespace(**{**base, **kw})


def test_fixed_mode_asserts_exact_length(monkeypatch):
    # A generate that stops one token early must be caught, not timed.
    monkeypatch.setattr(timing, "generate_with",
                        lambda engine, model, ids, mask, **kw: torch.full((ids.shape[0], 4), 5))
    ids = torch.ones(2, 3, dtype=torch.long)
    cell = timing.Cell("paper", "fixed", ("eager",), 2, 1)
    with pytest.raises(AssertionError, match="exactly 4 new tokens"):
        timing.time_cell({("e6d6", "eager"): None}, cell, [(ids, ids)], _args(), eos_id=1,
                            device=torch.device("cpu"))


def test_rounds_rotate_the_variant_and_engine_order(monkeypatch):
    calls = []

    def fake(engine, model, ids, mask, **kw):
        calls.append(f"{model}/{engine}")
        return torch.cat([torch.zeros(ids.shape[0], 1, dtype=torch.long),
                          torch.full((ids.shape[0], 4), 5)], dim=1)

    monkeypatch.setattr(timing, "generate_with", fake)
    # each pair its own memory figure: eager adds 3 MiB, ct2-int8 1 MiB, per variant + 10 * i
    monkeypatch.setattr(timing, "memory_before", lambda device: 0)
    monkeypatch.setattr(timing, "memory_added",
                        lambda device, engine, before: {"eager": 3.0, "ct2-int8": 1.0}[engine]
                        + 10 * len(calls))
    ids = torch.ones(1, 3, dtype=torch.long)
    cell = timing.Cell("paper", "fixed", ("eager", "ct2-int8"), 1, 1)
    decoders = {(v, e): v for v in "ab" for e in ("eager", "ct2-int8")}
    decoders[("a", "compiled")] = "a"  # not an engine of this cell: never called
    stats = timing.time_cell(decoders, cell, [(ids, ids)], _args(runs=3), eos_id=1,
                                device=torch.device("cpu"))
    # round r starts at pair r: every variant and engine within each round, rotated
    assert calls == ["a/eager", "a/ct2-int8", "b/eager", "b/ct2-int8",
                     "a/ct2-int8", "b/eager", "b/ct2-int8", "a/eager",
                     "b/eager", "b/ct2-int8", "a/eager", "a/ct2-int8"]
    assert set(stats) == {("a", "eager"), ("a", "ct2-int8"), ("b", "eager"), ("b", "ct2-int8")}
    assert all(len(s["runs_ms"]) == 3 for s in stats.values())
    # the largest of each pair's runs: a/eager ran as calls 1, 8, 11 -> 3 + 110
    assert stats[("a", "eager")]["peak_memory_mb"] == 113.0
    assert stats[("b", "ct2-int8")]["peak_memory_mb"] == 1.0 + 100


def test_a_wide_spread_is_recorded_and_judged_by_the_report():
    from asymprune.report.tables import disturbed_why

    s = timing.summarize([10.0, 10.5, 30.0], [4, 4, 4], [4, 4, 4], foreign=0.0,
                         load_before=0.1)
    # the same 4 steps each run: (30 - 10) / 10.5 = 1.9 > 0.25
    assert s["spread"] == pytest.approx(1.9, abs=0.005) and "disturbed" not in s
    assert disturbed_why(s["spread"], s["foreign_load"], 0.25, 0.1) == ["spread 1.90 > 0.25"]
    s = timing.summarize([10.0, 10.5, 11.0], [4, 4, 4], [4, 4, 4], foreign=0.5,
                         load_before=0.1)
    assert disturbed_why(s["spread"], s["foreign_load"], 0.25, 0.1) == [
        "foreign load 0.50 > 0.1"]
    s = timing.summarize([10.0, 10.5, 11.0], [4, 4, 4], [4, 4, 4], foreign=0.0,
                         load_before=0.1)
    assert disturbed_why(s["spread"], s["foreign_load"], 0.25, 0.1) == []
    assert s["median_ms"] == 10.5
    # a threshold is the report's: the same runs pass a looser one
    assert disturbed_why(0.3, None, 0.5, 0.1) == [] and disturbed_why(0.3, None, 0.25, 0.1)


def test_natural_length_runs_are_compared_per_decoding_step():
    """Natural mode times other documents each round: 20, 30 and 45 ms for 20, 30 and 45
    steps is 1 ms per step every time (not disturbed), though the times spread 1.2x; the same
    times for 30 steps each would be."""
    s = timing.summarize([20.0, 30.0, 45.0], [20, 30, 45], [20, 30, 45], foreign=0.0,
                         load_before=0.1)
    assert s["spread"] == pytest.approx(0.0)
    assert s["ms_per_step_median"] == pytest.approx(1.0) and s["median_ms"] == 30.0
    s = timing.summarize([20.0, 30.0, 45.0], [30, 30, 30], [30, 30, 30], foreign=0.0,
                         load_before=0.1)
    assert s["spread"] == pytest.approx(25 / 30)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "test.jsonl"
    write_jsonl(path, ({"id": str(i), "source": "summarize: " + t, "target": t}
                       for i, t in enumerate(make_texts(3, seed=1))))
    return path


def test_model_dirs_all_cells(tiny_model_dir, tiny_model, tiny_tokenizer, data_file, tmp_path):
    from asymprune.surgery import keep_blocks

    # a second variant: the same tiny model with 3 of its 6 decoder blocks
    short = tmp_path / "e6d3"
    keep_blocks(tiny_model, list(range(6)), [0, 2, 5]).save_pretrained(short)
    tiny_tokenizer.save_pretrained(short)
    out = tmp_path / "bench"
    rc = stage.main(["--model", f"e6d6={tiny_model_dir}", "--model", f"e6d3={short}",
                         "--data-file", str(data_file), "--size", "tiny", "--dataset", "toy",
                         "--engines", "eager", "--output-dir", str(out), *TINY])
    assert rc == 0
    d = json.loads((out / "e6d6.json").read_text())
    # the sidecar is the record the report reads (asymprune.records), field for field
    from asymprune.records import BenchRecord

    rec = BenchRecord.from_dict("e6d6.json", d)
    assert rec.to_dict() == {k: d[k] for k in rec.to_dict()}
    assert d["stage"] == "benchmark" and d["timed_with"] == ["e6d6", "e6d3"]
    assert (d["size"], d["dataset"], d["variant"], d["device_label"]) == ("tiny", "toy", "e6d6",
                                                                         "cpu")
    assert (d["encoder_layers"], d["decoder_layers"]) == (6, 6)
    assert json.loads((out / "e6d3.json").read_text())["decoder_layers"] == 3
    assert d["params"] > 0 and d["dtype"] == "fp32" and d["device_name"]
    assert d["inputs"] == "real" and d["source_tokens"] == 16
    assert [(r["protocol"], r["mode"], r["engine"], r["batch_size"], r["num_beams"])
            for r in d["results"]] == [
        ("paper", "fixed", "eager", 1, 1), ("paper", "fixed", "eager", 2, 1),
        ("paper", "natural", "eager", 1, 1), ("paper", "natural", "eager", 2, 1),
        ("nash", "natural", "eager", 32, 4)]
    for r in d["results"]:
        assert len(r["runs_ms"]) == 2
        assert r["median_ms"] == pytest.approx(sum(r["runs_ms"]) / 2)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["std_ms"] >= 0 and "disturbed" not in r  # raw runs: the report judges
        # real inputs: documents of 8-30 words, truncated to 16 tokens, never longer
        assert 1 <= r["source_tokens_mean"] <= 16
        if r["mode"] == "fixed":
            assert r["new_tokens_mean"] == 4
        else:
            assert 1 <= r["new_tokens_mean"] <= 6
    assert d["args"]["runs"] == 2 and "versions" in d and "code_version" in d


def test_arch_only_flan_small(tmp_path):
    out = tmp_path / "arch"
    assert stage.main(["--arch", "small", "--variants", "e6d6", "--output-dir", str(out),
                           "--engines", "eager", *TINY]) == 0
    d = json.loads((out / "e6d6.json").read_text())
    assert d["params"] == TABLE1["small"]["total"]
    assert (d["size"], d["variant"], d["dataset"], d["model_source"]) == ("small", "e6d6", None,
                                                                         "arch")
    # arch default: fixed only, no NASH protocol; random tokens of exactly source_tokens
    assert [r["mode"] for r in d["results"]] == ["fixed", "fixed"]
    assert all(r["new_tokens_mean"] == 4 and r["source_tokens_mean"] == 16
               for r in d["results"])


@pytest.mark.parametrize("argv,message", [
    (["--arch", "small"], "needs --variants"),
    (["--arch", "small", "--variants", "nash-d3-uniform-l0s30"], "--variants"),
    (["--arch", "small", "--variants", "e6d6", "--modes", "natural"], "natural mode"),
    (["--arch", "small", "--variants", "e6d6", "--runs", "1"],
     "--runs: 1 is less than the minimum of 2"),
    (["--model", "e9d9=x"], "e{E}d{D}"),
    ([], "exactly one of"),
])
def test_cli_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        stage.parse_args([*argv, "--output-dir", str(tmp_path / "x")])
    assert message in capsys.readouterr().err


def test_foreign_load_is_a_share_of_the_cpus_this_job_may_use(monkeypatch):
    monkeypatch.setattr(timing.os, "sysconf", lambda name: 100)
    # 1 s on 2 CPUs = 200 ticks; 150 busy, 110 of them ours: 40 / 200 = 0.2
    assert timing.foreign_load((1000, 500), (1150, 610), 1.0, 2) == pytest.approx(0.2)
    assert timing.foreign_load((0, 0), (500, 0), 1.0, 2) == 1.0  # clamped: rounding
    assert timing.foreign_load((0, 0), (10, 0), 0.1, 2) is None  # 20 ticks: too short
    assert timing.foreign_load(None, (10, 0), 1.0, 2) is None
    # only the allowed CPUs' lines count: cpu1 = 10 + 1 + 5 + 2 + 3 + 4 busy (idle, iowait
    # left out), cpu0 and the machine total are not ours
    stat = ("cpu  999 0 999 999 0 0 0 0 0 0\n"
            "cpu0 500 0 500 100 0 0 0 0 0 0\n"
            "cpu1 10 1 5 700 9 2 3 4 0 0\n"
            "intr 12345\n")
    assert timing.busy_ticks(stat, {1}) == 25
    assert timing.busy_ticks(stat, {0, 1}) == 1025


def test_weights_that_cannot_fit_stop_the_job_naming_the_remedies():
    GiB = 2**30
    timing.check_fits({"e6d6": 3 * GiB, "e6d3": 2 * GiB}, 5 * GiB, "benchmark of large/xsum",
                         "fp32")  # exactly fits: no error (only the weights are counted)
    with pytest.raises(RuntimeError) as e:
        timing.check_fits({"e6d6": 3 * GiB, "e6d3": 2 * GiB, "e1d1": GiB // 2}, 5 * GiB,
                             "benchmark of large/xsum", "fp32")
    msg = str(e.value)
    assert msg.startswith("benchmark of large/xsum: the 3 models timed interleaved")
    assert "need 5.5 GiB of fp32 weights (largest: e6d6 3.0, e6d3 2.0, e1d1 0.5 GiB)" in msg
    assert "5.0 GiB free" in msg and "benchmark.dtype: bf16" in msg


def test_meta_sizes_equal_the_loaded_models(tiny_model, tiny_tokenizer, tmp_path):
    from asymprune.modeling import load_model, meta_model, weight_bytes
    from asymprune.nash.prune import prune_encoder

    tiny_model.save_pretrained(tmp_path / "plain")
    # width-pruned as NASH leaves it: per-layer heads and FFN widths differ
    heads = [[0], [0, 1], [], [1], [0, 1], [0]]
    units = [list(range(0, tiny_model.config.d_ff, k)) for k in (2, 3, 1, 5, 4, 7)]
    prune_encoder(tiny_model, heads, units).save_pretrained(tmp_path / "nash")
    for name in ("plain", "nash"):
        for dtype in ("fp32", "bf16"):
            meta = weight_bytes(meta_model(tmp_path / name, dtype))
            assert meta == weight_bytes(load_model(tmp_path / name, dtype)) > 0, (name, dtype)
    assert weight_bytes(meta_model(tmp_path / "nash")) < weight_bytes(meta_model(tmp_path / "plain"))
    # arch mode sizes the model build_arch_model makes (its lm_head is not tied): 2 x 4 bytes x
    # 32128 x 512 for shared + lm_head of FLAN-T5-small's embeddings, at least
    arch = inputs.build_arch_model("small", "e1d1", "auto", 0, torch.device("meta"), "fp32")
    assert weight_bytes(arch) > 2 * 4 * 32128 * 512


def test_a_gpu_run_is_sized_before_any_model_loads(tiny_model_dir, data_file, tmp_path,
                                                    monkeypatch):
    # no GPU here: pretend one with 1 kB free (the tiny model has more); the job must stop
    # before loading a model
    monkeypatch.setattr(stage, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 2**30))
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(RuntimeError, match=r"benchmark of tiny/toy: the 1 models timed "
                                           r"interleaved .* 0\.0 GiB free"):
        stage.main(["--model", f"e6d6={tiny_model_dir}", "--data-file", str(data_file),
                        "--size", "tiny", "--dataset", "toy", "--device", "cuda",
                        "--output-dir", str(tmp_path / "bench"), *TINY])


def test_ct2_engines_are_timed_with_eager_in_one_cell(tiny_model_dir, data_file, tmp_path):
    from asymprune import ct2

    pytest.importorskip("ctranslate2")
    ct2.main(["--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "ct2")])
    out = tmp_path / "bench"
    argv = [*TINY, "--model", f"e6d6={tiny_model_dir}", "--data-file", str(data_file),
            "--engines", "eager", "ct2-float32", "ct2-int8", "--modes", "fixed",
            "--batch-sizes", "2", "--nash-protocol", "false", "--output-dir", str(out)]
    with pytest.raises(SystemExit):  # a ct2 engine without the variant's export
        stage.parse_args(argv)
    assert stage.main(argv + ["--ct2-model", f"e6d6={tmp_path / 'ct2'}"]) == 0
    d = json.loads((out / "e6d6.json").read_text())
    assert [r["engine"] for r in d["results"]] == ["eager", "ct2-float32", "ct2-int8"]
    assert d["ct2_export"]["padded_heads"] == 0
    for r in d["results"]:
        assert r["new_tokens_mean"] == 4 and len(r["runs_ms"]) == 2
        assert r["peak_memory_of"] == "rss" and r["peak_memory_mb"] >= 0
