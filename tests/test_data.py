import json

import pytest

from asymprune import data
from asymprune.artifacts import read_jsonl


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _local(tmp_path, rows_by_split, fmt="jsonl"):
    src = tmp_path / "src"
    src.mkdir()
    for split, rows in rows_by_split.items():
        _write(src / f"{split}.{fmt}", rows)
    return src


def test_generated_data_is_deterministic_and_prefixed(tmp_path):
    argv = ["--kind", "generated", "--num-samples", "train=5", "--num-samples", "validation=2",
            "--num-samples", "test=3", "--source-prefix", "summarize: "]
    data.main(argv + ["--output-dir", str(tmp_path / "a")])
    data.main(argv + ["--output-dir", str(tmp_path / "b")])
    a, b = read_jsonl(tmp_path / "a/test.jsonl"), read_jsonl(tmp_path / "b/test.jsonl")
    assert a == b and len(a) == 3
    assert all(r["source"].startswith("summarize: ") for r in a)
    # the summary's facts are in the source: the task is learnable
    for r in a:
        org = r["target"].split(" to ")[0]
        assert org in r["source"]
    side = json.loads((tmp_path / "a/data.json").read_text())
    assert side["samples"] == {"train": 5, "validation": 2, "test": 3}


def test_local_jsonl_with_custom_columns_and_limits(tmp_path):
    rows = [{"doc": f"text {i}", "summ": f"sum {i}", "key": i} for i in range(6)]
    src = _local(tmp_path, {s: rows for s in data.SPLITS})
    data.main(["--kind", "local", "--path", str(src), "--source-column", "doc",
               "--target-column", "summ", "--id-column", "key", "--max-samples", "test=2",
               "--output-dir", str(tmp_path / "out")])
    test = read_jsonl(tmp_path / "out/test.jsonl")
    assert test == [{"id": "0", "source": "text 0", "target": "sum 0"},
                    {"id": "1", "source": "text 1", "target": "sum 1"}]
    assert len(read_jsonl(tmp_path / "out/train.jsonl")) == 6


def test_csv_source(tmp_path):
    src = tmp_path / "csv"
    src.mkdir()
    for s in data.SPLITS:
        (src / f"{s}.csv").write_text("source,target\nhello world,hi\n")
    data.main(["--kind", "local", "--path", str(src), "--format", "csv",
               "--output-dir", str(tmp_path / "out")])
    assert read_jsonl(tmp_path / "out/validation.jsonl")[0]["target"] == "hi"


def test_missing_column_is_named_with_the_available_ones(tmp_path):
    src = _local(tmp_path, {s: [{"article": "a", "highlights": "b"}] for s in data.SPLITS})
    with pytest.raises(ValueError, match=r"no column 'document'.*\['article', 'highlights'\]"):
        data.main(["--kind", "local", "--path", str(src), "--source-column", "document",
                   "--target-column", "highlights", "--output-dir", str(tmp_path / "o")])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl does not exist"):
        data.main(["--kind", "local", "--path", str(tmp_path / "nope"),
                   "--output-dir", str(tmp_path / "o")])


def test_empty_split_and_empty_texts(tmp_path):
    src = _local(tmp_path, {"train": [], "validation": [{"source": "a", "target": "b"}],
                            "test": [{"source": "a", "target": "b"}]})
    (src / "train.jsonl").write_text("")
    with pytest.raises(Exception):
        data.main(["--kind", "local", "--path", str(src), "--output-dir", str(tmp_path / "o")])
    rows = [{"source": "a", "target": "b"}, {"source": " ", "target": "b"},
            {"source": "c", "target": ""}]
    src2 = tmp_path / "s2"
    src2.mkdir()
    for s in data.SPLITS:
        _write(src2 / f"{s}.jsonl", rows)
    with pytest.raises(ValueError, match="2 example\\(s\\) with an empty source or target"):
        data.main(["--kind", "local", "--path", str(src2), "--output-dir", str(tmp_path / "o2")])
    data.main(["--kind", "local", "--path", str(src2), "--empty-policy", "drop",
               "--output-dir", str(tmp_path / "o3")])
    side = json.loads((tmp_path / "o3/data.json").read_text())
    assert side["samples"]["test"] == 1 and side["dropped_empty"]["test"] == 2


def test_empty_split_message(tmp_path):
    src = _local(tmp_path, {s: [{"source": "a", "target": "b"}] for s in data.SPLITS})
    import datasets

    ds = datasets.Dataset.from_list([{"source": "a", "target": "b"}]).select([])
    with pytest.raises(ValueError, match="split 'test' is empty"):
        data.to_rows(ds, source_column="source", target_column="target", id_column=None,
                     split="test", max_samples=None, prefix="", empty_policy="error",
                     where=str(src))
