import json

import pytest

from asymprune import data, settings
from asymprune.artifacts import read_jsonl


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _local(tmp_path, rows_by_split, fmt="jsonl"):
    src = tmp_path / "src"
    src.mkdir()
    for split, rows in rows_by_split.items():
        _write(src / f"{split}.{fmt}", rows)
    return src


def _fails(argv, capsys) -> str:
    """A data error: exit code 1 and exactly one line on stderr, which is returned."""
    assert data.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_generated_data_is_deterministic_and_prefixed(tmp_path):
    argv = ["--kind", "generated", "--num-samples", "train=5", "validation=2", "test=3"]
    data.main(argv + ["--output-dir", str(tmp_path / "a")])
    data.main(argv + ["--output-dir", str(tmp_path / "b")])
    a, b = read_jsonl(tmp_path / "a/test.jsonl"), read_jsonl(tmp_path / "b/test.jsonl")
    assert a == b and len(a) == 3
    # the prefix's default is FLAN-T5's, from asymprune.settings.Data
    assert all(r["source"].startswith("summarize: ") for r in a)
    # the summary's facts are in the source: the task is learnable
    for r in a:
        org = r["target"].split(" to ")[0]
        assert org in r["source"]
    side = json.loads((tmp_path / "a/data.json").read_text())
    assert side["samples"] == {"train": 5, "validation": 2, "test": 3}


def test_generated_needs_every_split(tmp_path, capsys):
    with pytest.raises(SystemExit):
        data.main(["--kind", "generated", "--num-samples", "train=5",
                   "--output-dir", str(tmp_path)])
    assert "--num-samples: a generated data set needs a count for every split" in \
        capsys.readouterr().err


def test_local_jsonl_with_custom_columns_and_limits(tmp_path):
    rows = [{"doc": f"text {i}", "summ": f"sum {i}", "key": i} for i in range(6)]
    src = _local(tmp_path, {s: rows for s in data.SPLITS})
    data.main(["--kind", "local", "--path", str(src), "--source-column", "doc",
               "--target-column", "summ", "--id-column", "key", "--max-samples", "test=2",
               "--source-prefix", "", "--output-dir", str(tmp_path / "out")])
    test = read_jsonl(tmp_path / "out/test.jsonl")
    assert test == [{"id": "0", "source": "text 0", "target": "sum 0"},
                    {"id": "1", "source": "text 1", "target": "sum 1"}]
    assert len(read_jsonl(tmp_path / "out/train.jsonl")) == 6


def test_settings_json_as_the_workflow_passes_it(tmp_path):
    rows = [{"doc": "text", "summ": "sum"}]
    src = _local(tmp_path, {s: rows for s in data.SPLITS})
    block = {"kind": "local", "path": str(src), "source_column": "doc", "target_column": "summ",
             "source_prefix": "tl;dr: "}
    assert data.main(["--settings", json.dumps(block), "--config-key", "datasets.mine",
                      "--output-dir", str(tmp_path / "out")]) == 0
    assert read_jsonl(tmp_path / "out/test.jsonl")[0]["source"] == "tl;dr: text"


def test_csv_source(tmp_path):
    src = tmp_path / "csv"
    src.mkdir()
    for s in data.SPLITS:
        (src / f"{s}.csv").write_text("source,target\nhello world,hi\n")
    data.main(["--kind", "local", "--path", str(src), "--format", "csv",
               "--output-dir", str(tmp_path / "out")])
    assert read_jsonl(tmp_path / "out/validation.jsonl")[0]["target"] == "hi"


def test_missing_column_names_the_config_key_and_the_available_ones(tmp_path, capsys):
    src = _local(tmp_path, {s: [{"article": "a", "highlights": "b"}] for s in data.SPLITS})
    argv = ["--kind", "local", "--path", str(src), "--source-column", "document",
            "--target-column", "highlights", "--output-dir", str(tmp_path / "o")]
    err = _fails(argv, capsys)
    assert "no column 'document' (--source-column)" in err and "['article', 'highlights']" in err
    err = _fails(argv + ["--config-key", "datasets.qiws"], capsys)
    assert "no column 'document' (config key datasets.qiws.source_column)" in err


def test_missing_file_names_the_path(tmp_path, capsys):
    err = _fails(["--kind", "local", "--path", str(tmp_path / "nope"), "--config-key",
                  "datasets.qiws", "--output-dir", str(tmp_path / "o")], capsys)
    assert "train.jsonl does not exist" in err and "config key datasets.qiws.path" in err


@pytest.mark.parametrize("content,line,what", [
    ('{"source": "a", "target": "b"}\n{"source": "a", "target": \n', 2, "not valid JSON"),
    ('{"source": "a", "target": "b"}\n\n["a", "b"]\n', 3, "a JSONL row must be an object"),
    ('{"source": "a", "target": "b"}\n{"source": "\xff\xfe"}\n', 2, "not UTF-8"),
])
def test_corrupt_jsonl_names_file_line_and_key(tmp_path, capsys, content, line, what):
    good = [{"source": "a", "target": "b"}]
    src = _local(tmp_path, {s: good for s in data.SPLITS})
    raw = content.encode("latin-1") if "\xff" in content else content.encode()
    (src / "validation.jsonl").write_bytes(raw)
    err = _fails(["--kind", "local", "--path", str(src), "--config-key", "datasets.qiws",
                  "--output-dir", str(tmp_path / "o")], capsys)
    assert f"{src / 'validation.jsonl'}:{line}: {what}" in err
    assert "config key datasets.qiws.path" in err


def test_empty_split_and_empty_texts(tmp_path, capsys):
    src = _local(tmp_path, {"train": [], "validation": [{"source": "a", "target": "b"}],
                            "test": [{"source": "a", "target": "b"}]})
    (src / "train.jsonl").write_text("")
    assert data.main(["--kind", "local", "--path", str(src),
                      "--output-dir", str(tmp_path / "o")]) != 0
    capsys.readouterr()
    rows = [{"source": "a", "target": "b"}, {"source": " ", "target": "b"},
            {"source": "c", "target": ""}]
    src2 = tmp_path / "s2"
    src2.mkdir()
    for s in data.SPLITS:
        _write(src2 / f"{s}.jsonl", rows)
    err = _fails(["--kind", "local", "--path", str(src2), "--config-key", "datasets.x",
                  "--output-dir", str(tmp_path / "o2")], capsys)
    assert "2 example(s) with an empty source or target" in err
    assert "set config key data.empty_policy to 'drop'" in err
    data.main(["--kind", "local", "--path", str(src2), "--empty-policy", "drop",
               "--output-dir", str(tmp_path / "o3")])
    side = json.loads((tmp_path / "o3/data.json").read_text())
    assert side["samples"]["test"] == 1 and side["dropped_empty"]["test"] == 2


def test_empty_split_message(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"source": "a", "target": "b"}]).select([])
    d = settings.Data(kind="local", path="here", source_prefix="", empty_policy="error")
    with pytest.raises(data.DataError, match="split 'test' is empty"):
        data.to_rows(ds, d=d, block=None, split="test", max_samples=None, where="here")


def test_json_and_parquet_sources(tmp_path):
    import pandas as pd

    rows = [{"source": "hello world", "target": "hi", "n": "007"}]
    for fmt in ("json", "parquet"):
        src = tmp_path / fmt
        src.mkdir()
        for s in data.SPLITS:
            if fmt == "json":
                (src / f"{s}.json").write_text(json.dumps(rows))
            else:
                pd.DataFrame(rows).to_parquet(src / f"{s}.parquet")
        data.main(["--kind", "local", "--path", str(src), "--format", fmt, "--id-column", "n",
                   "--source-prefix", "", "--output-dir", str(tmp_path / f"out-{fmt}")])
        assert read_jsonl(tmp_path / f"out-{fmt}/test.jsonl") == [
            {"id": "007", "source": "hello world", "target": "hi"}]


def test_json_format_needs_an_array(tmp_path, capsys):
    src = _local(tmp_path, {s: [{"source": "a", "target": "b"}] for s in data.SPLITS}, "json")
    err = _fails(["--kind", "local", "--path", str(src), "--format", "json",
                  "--output-dir", str(tmp_path / "o")], capsys)
    assert "needs a JSON array of objects" in err
