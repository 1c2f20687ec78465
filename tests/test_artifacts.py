import pytest

from asymprune.artifacts import atomic_dir, read_jsonl, write_jsonl


def test_a_failed_write_leaves_neither_a_half_model_nor_its_temp(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("crash while saving")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_finished_write_replaces_what_was_there(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "stale.bin").write_text("old")  # e.g. the folder Snakemake created for an output
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]


def test_jsonl_round_trip(tmp_path):
    rows = [{"id": "1", "source": "ä", "target": "b"}]
    assert write_jsonl(tmp_path / "x.jsonl", rows) == 1
    assert read_jsonl(tmp_path / "x.jsonl") == rows


def test_what_a_killed_writer_left_is_deleted_by_the_next_write(tmp_path):
    (tmp_path / "model.tmp-4242").mkdir()            # a SIGKILLed process's temp folder
    (tmp_path / "model.tmp-4242" / "model.safetensors").write_text("half")
    (tmp_path / "model-2.tmp-4242").mkdir()          # another folder's: not ours to delete
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model-2.tmp-4242"]
