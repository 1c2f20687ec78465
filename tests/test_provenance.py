import shutil

from asymprune import provenance


def test_stage_modules_follow_imports_transitively():
    names = {p.name for p in provenance.stage_modules("prune_layers")}
    assert {"prune_layers.py", "layers.py", "surgery.py", "modeling.py", "__init__.py"} <= names
    assert "provenance.py" not in names  # metadata only: editing it must not retrain models
    assert "finetune.py" not in names


def test_code_hash_changes_with_the_stage_and_its_imports_only(tmp_path):
    pkg = tmp_path / "asymprune"
    shutil.copytree(provenance.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: provenance.stage_code_hash(s, pkg) for s in ("evaluate", "finetune", "data")}
    (pkg / "rouge.py").write_text((pkg / "rouge.py").read_text() + "\n# edited\n")
    after = {s: provenance.stage_code_hash(s, pkg) for s in ("evaluate", "finetune", "data")}
    assert after["evaluate"] != before["evaluate"]  # evaluate imports rouge
    assert after["finetune"] == before["finetune"]
    assert after["data"] == before["data"]


def test_sidecar_records_what_aggregation_needs():
    car = provenance.make_sidecar("data", {"x": 1}, samples={"train": 3}, wall_time_s=0.5)
    assert car["code_version"]["stage_hash"] == provenance.stage_code_hash("data")
    assert car["versions"]["snakemake"] and car["samples"] == {"train": 3}
    assert car["args"] == {"x": 1} and "host" in car["device"]
