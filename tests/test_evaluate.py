"""The evaluate stage on the tiny (untrained) model: structure, order, counts, shallow encoders."""

from __future__ import annotations

import json

import pytest
import torch

from asymprune.artifacts import read_jsonl, write_jsonl
from asymprune.rouge import ROUGE_TYPES
from conftest import make_texts

N_ROWS = 7


@pytest.fixture
def data_file(tmp_path):
    texts = make_texts(2 * N_ROWS, seed=3)
    rows = [{"id": f"doc-{i}", "source": "summarize: " + texts[2 * i], "target": texts[2 * i + 1]}
            for i in range(N_ROWS)]
    path = tmp_path / "test.jsonl"
    write_jsonl(path, rows)
    return path


def _run(model_dir, data_file, tmp_path, *extra, name="eval"):
    from asymprune.evaluate import main

    out, preds = tmp_path / f"{name}.json", tmp_path / f"{name}.predictions.jsonl"
    rc = main(["--model", str(model_dir), "--data-file", str(data_file), "--output", str(out),
               "--predictions", str(preds), "--max-new-tokens", "6", "--batch-size", "3",
               "--device", "cpu", *extra])
    assert rc == 0
    return json.loads(out.read_text()), read_jsonl(preds)


def test_evaluate_cli(tiny_model_dir, data_file, tmp_path):
    result, preds = _run(tiny_model_dir, data_file, tmp_path, "--max-samples", "5",
                         "--tag", "size=tiny", "--tag", "dataset=demo", "--tag", "variant=e6d6")
    assert result["stage"] == "evaluate"
    # the report groups eval files by these top-level labels
    assert (result["size"], result["dataset"], result["variant"]) == ("tiny", "demo", "e6d6")
    assert result["samples"] == {"eval": 5}
    assert set(result["metrics"]) == {*ROUGE_TYPES, "gen_len"}
    for key in ROUGE_TYPES:
        assert 0.0 <= result["metrics"][key] <= 100.0
    assert result["model_sidecar"] is None  # the fixture folder has no sidecar.json
    assert result["args"]["num_beams"] == 1 and result["args"]["max_samples"] == 5
    assert result["model_layers"] == {"encoder": 6, "decoder": 6}
    for key in ROUGE_TYPES:  # the mean lies inside its bootstrap interval
        lo, hi = result["metrics_ci95"][key]
        assert lo <= result["metrics"][key] <= hi
    # a hub-style teacher without a sidecar: no training after the teacher to count
    assert result["record"] == {"encoder_layers": 6, "decoder_layers": 6, "phases": [],
                                "nash": None}
    assert result["wall_time_s"] > 0 and "versions" in result and "code_version" in result

    rows = read_jsonl(data_file)[:5]
    assert [p["id"] for p in preds] == [r["id"] for r in rows]  # input order, not length order
    assert [p["reference"] for p in preds] == [r["target"] for r in rows]
    assert all(isinstance(p["prediction"], str) for p in preds)
    # at most 6 new tokens each. Not at least 1: this random model emits <pad> (id 0) as a
    # real token, which run_summarization's rule (count tokens != pad) does not count.
    assert all(0 <= p["gen_len"] <= 6 for p in preds)
    assert result["metrics"]["gen_len"] == pytest.approx(sum(p["gen_len"] for p in preds) / 5)


def test_evaluate_reads_model_sidecar_and_runs_e1d6(tiny_model_dir, data_file, tmp_path):
    """An encoder-shallower model (plain model.generate would raise IndexError) evaluates."""
    from asymprune.prune_layers import main as prune

    pruned = tmp_path / "e1d6"
    assert prune(["--model", str(tiny_model_dir), "--variant", "e1d6", "--output", str(pruned)]) == 0
    result, preds = _run(pruned, data_file, tmp_path, name="e1d6")
    assert result["samples"] == {"eval": N_ROWS} and len(preds) == N_ROWS
    assert result["model_layers"] == {"encoder": 1, "decoder": 6}
    assert result["model_sidecar"]["stage"] == "prune_layers"
    assert result["model_sidecar"]["kept_blocks"]["encoder"] == [0]
    # the record prune_layers wrote, passed on: a teacher without a sidecar, cut, untrained
    assert result["record"] == {"encoder_layers": 1, "decoder_layers": 6, "phases": [],
                                "nash": None}


def test_a_model_record_that_is_not_the_model_is_an_error(tiny_model_dir, data_file, tmp_path):
    """The record's depth must be the loaded model's; a sidecar without one asks for a rerun."""
    import shutil

    from asymprune.evaluate import main

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    side = folder / "sidecar.json"
    record = {"encoder_layers": 6, "decoder_layers": 3, "phases": [], "nash": None}
    side.write_text(json.dumps({"stage": "prune_layers", "record": record}))
    argv = ["--model", str(folder), "--data-file", str(data_file), "--output",
            str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.jsonl"),
            "--device", "cpu"]
    with pytest.raises(ValueError, match=r"m/sidecar.json: record says 6 encoder and 3 "
                                         r"decoder layers, .* has 6 and 6"):
        main(argv)
    side.write_text(json.dumps({"stage": "finetune"}))   # a sidecar of the older format
    with pytest.raises(ValueError, match="no 'record' .*rerun its finetune stage"):
        main(argv)
    assert not (tmp_path / "e.json").exists()


def test_summarize_counts_and_keeps_order(tiny_model, tiny_tokenizer, monkeypatch):
    """A stub generate() whose output encodes each source's length checks both the batching
    order (sorted by length, mapped back) and the gen_len rule (non-pad tokens, EOS counted)."""
    import asymprune.evaluate as ev
    from asymprune import generation

    pad, eos, tok = tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id, 5

    def fake_generate(model, input_ids, attention_mask, **kw):
        lens = attention_mask.sum(dim=1).tolist()
        width = 1 + max(lens) + 1 + 2  # start + content + EOS + 2 trailing pads at least
        out = torch.full((len(lens), width), pad)
        for r, n in enumerate(lens):  # [<pad>, 5 x n, </s>, <pad>...]
            out[r, 1:1 + n] = tok
            out[r, 1 + n] = eos
        return out

    # the eager engine calls asymprune.generation.generate at call time
    monkeypatch.setattr(generation, "generate", fake_generate)
    sources = make_texts(6, seed=5)
    lengths = [len(x) for x in tiny_tokenizer(sources)["input_ids"]]
    assert len(set(lengths)) > 1  # sorting must actually reorder
    preds, gen_lens = ev.summarize(tiny_model, tiny_tokenizer, sources, batch_size=4,
                                   max_source_length=1024, max_new_tokens=8, num_beams=1,
                                   device=torch.device("cpu"))
    assert gen_lens == [n + 1 for n in lengths]  # n content tokens + EOS
    assert preds == [tiny_tokenizer.decode([tok] * n, skip_special_tokens=True).strip()
                     for n in lengths]


def test_bad_data_file_is_an_error(tiny_model_dir, tmp_path):
    from asymprune.evaluate import main

    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"id": "a", "source": "summarize: x"}])
    args = ["--model", str(tiny_model_dir), "--data-file", str(bad), "--output",
            str(tmp_path / "o.json"), "--predictions", str(tmp_path / "o.jsonl")]
    with pytest.raises(ValueError, match=r"row 0 lacks column\(s\) \['target'\]"):
        main(args)
    for bad_flag in (["--batch-size", "0"], ["--tag", "metrics=x"], ["--tag", "size"],
                     ["--tag", "size=a", "--tag", "size=b"]):
        with pytest.raises(SystemExit):
            main(args + bad_flag)
    assert not (tmp_path / "o.json").exists()
