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
    (pkg / "records.py").write_text((pkg / "records.py").read_text() + "\n# edited\n")
    after = {s: provenance.stage_code_hash(s, pkg) for s in ("evaluate", "finetune", "data")}
    assert after["evaluate"] != before["evaluate"]  # evaluate imports records
    assert after["finetune"] == before["finetune"]
    assert after["data"] == before["data"]
    # the model record is written by the training stages: editing it reruns them
    (pkg / "model_record.py").write_text((pkg / "model_record.py").read_text() + "\n# edited\n")
    again = {s: provenance.stage_code_hash(s, pkg) for s in ("evaluate", "finetune", "data")}
    assert again["finetune"] != after["finetune"] and again["evaluate"] != after["evaluate"]
    assert again["data"] == after["data"]


def test_sidecar_records_what_aggregation_needs():
    car = provenance.make_sidecar("data", {"x": 1}, samples={"train": 3}, wall_time_s=0.5)
    assert car["code_version"]["stage_hash"] == provenance.stage_code_hash("data")
    assert car["versions"]["snakemake"] and car["samples"] == {"train": 3}
    assert car["args"] == {"x": 1} and "host" in car["device"]
    assert car["device"]["cpu_model"]  # same seed, other CPU: other floats (README)


def test_cpu_model_reads_proc_cpuinfo_and_falls_back_to_platform(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    "model name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert provenance.cpu_model(info) == "AMD EPYC 7B13"
    # an ARM kernel's cpuinfo has no "model name"; a missing file (macOS) likewise falls back
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    monkeypatch.setattr(provenance.platform, "machine", lambda: "aarch64")
    assert provenance.cpu_model(tmp_path / "arm") == "aarch64"
    monkeypatch.setattr(provenance.platform, "processor", lambda: "arm")
    assert provenance.cpu_model(tmp_path / "missing") == "arm"
