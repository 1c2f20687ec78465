"""The Snakemake workflow: the paper grid, config validation, a micro run end to end, reruns."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
MICRO = yaml.safe_load((REPO / "configs/micro.yaml").read_text())
# every model that is evaluated: depth variants, NASH variants, equal-budget baselines
MICRO_MODELS = (MICRO["variants"] + MICRO["nash"]["variants"]
                + [f"{v}-{o}" for v in MICRO["baselines"]["variants"]
                   for o in MICRO["baselines"]["objectives"]])


def snakemake(*args, cwd=REPO, env=None, timeout=900):
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table (rule, count)."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_table = True
            continue
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if in_table and m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry(workdir: Path, configfile: Path | None = None, snakefile: Path = REPO / "Snakefile",
        env=None):
    args = ["-n", "--quiet", "rules", "-s", str(snakefile), "--directory", str(workdir)]
    if configfile:
        args += ["--configfile", str(configfile)]
    return snakemake(*args, env=env)


def test_paper_grid_dry_run_counts(tmp_path):
    rc, out = snakemake("-n", "--quiet", "rules", "--directory", str(tmp_path),
                        "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"))
    assert rc == 0, out
    counts = job_counts(out)
    # the NASH stage also trains the equal-budget baselines e6d{1,2,3}-kd (config baselines)
    n_baselines = 27  # 3 sizes x 3 data sets x 3 depth variants x 1 objective
    n_nash = counts.get("nash", 0) - n_baselines
    assert counts["data"] == 3
    assert counts["finetune"] == 9  # 3 sizes x 3 data sets
    assert counts["prune_layers"] == 135  # x 15 pruned variants
    assert counts["refinetune"] == 135
    # NASH-2/3/4 at 30 % for each size and data set, NASH-3 -rel on small's 3 data sets
    assert n_nash == 27 + 3
    assert counts["nash_finetune"] == 30 + n_baselines
    assert counts["evaluate"] == 144 + n_nash + n_baselines  # x 16 variants (+ NASH models)
    # one benchmark job per size and data set times its 16 + 3 NASH models interleaved, and
    # one per FLAN-T5 architecture its 16 depth variants
    assert counts["benchmark"] == 9
    assert counts["benchmark_arch"] == 3
    assert counts["report"] == 1
    # the private QIWS set is missing on this machine: said clearly, naming the key to set
    assert "set config key datasets.qiws.path" in out


def test_paper_grid_stops_on_a_nash_depth_no_flan_t5_has(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["nash"] = {"variants": ["nash-d99-uniform-l0s30"]}
    rc, out = dry(tmp_path, write_config(tmp_path / "d99.yaml", cfg))
    assert rc != 0
    assert ("config key nash.variants: nash-d99-uniform-l0s30 keeps 99 decoder blocks but the "
            "model has only 8 (models.small has 8 encoder + 8 decoder blocks)") in out, out
    assert "models.large has 24" in out


def test_default_config_is_the_one_without_configfile(tmp_path):
    """`snakemake -n` in a fresh checkout uses config.yaml; a preset replaces it (no merge)."""
    rc, out = snakemake("-n", "--quiet", "rules")
    assert rc == 0, out
    assert job_counts(out)["finetune"] == 9
    rc, out = dry(tmp_path, REPO / "configs/demo.yaml")
    assert rc == 0, out
    assert job_counts(out)["finetune"] == 1  # not merged with the paper's 3 sizes x 3 sets


BAD = {
    "variant e7d1": (lambda c: c.update(variants=["e6d6", "e7d1"]), "config key variants"),
    "variant e0d3": (lambda c: c.update(variants=["e6d6", "e0d3"]), "'e0d3'"),
    "negative learning rate": (lambda c: c["finetune"].update(learning_rate=-1e-4),
                               "config key finetune.learning_rate"),
    "unknown key": (lambda c: c.update(learning_rat=1), "unknown key(s) ('learning_rat'"),
    "unknown nested key": (lambda c: c["evaluate"].update(beams=2),
                           "config key evaluate: unknown key(s) ('beams'"),
    "unknown arch size": (lambda c: c["benchmark"].update(arch_only=["xl"]),
                          "config key benchmark.arch_only.0"),
    "model without source": (lambda c: c["models"].update(xl={"resources": {"gpu": 1}}),
                             "config key models.xl: give exactly one of name_or_path"),
    "local data set without a path": (
        lambda c: c["datasets"].update(qiws={"kind": "local"}),
        "config key datasets.qiws.path: a local data set needs a path"),
    "no baseline": (lambda c: c.update(variants=["e3d3"]), "must include e6d6"),
    "negative refinetune lr": (lambda c: c["refinetune"].update(learning_rate=-1e-4),
                               "config key refinetune.learning_rate"),
    "zero refinetune batch": (lambda c: c["refinetune"].update(per_device_batch_size=0),
                              "config key refinetune.per_device_batch_size"),
    "epochs as words": (lambda c: c["nash"]["finetune"].update(epochs="three"),
                        "config key nash.finetune.epochs: 'three' is not of type 'number'"),
    "nash deeper than the model": (lambda c: c["nash"].update(variants=["nash-d7-uniform-l0s30"]),
                                   "config key nash.variants: nash-d7-uniform-l0s30 keeps 7"),
    "effective batch": (lambda c: c["finetune"].update(effective_batch_size=20),
                        "config key finetune.effective_batch_size: 20 is not a multiple"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_stops_the_dry_run_naming_the_key(case, tmp_path):
    edit, expected = BAD[case]
    cfg = copy.deepcopy(MICRO)
    edit(cfg)
    rc, out = dry(tmp_path, write_config(tmp_path / "bad.yaml", cfg))
    assert rc != 0
    assert expected in out, out
    assert not (tmp_path / "results").exists()


def test_missing_local_data_stops_before_any_job(tmp_path):
    cfg = copy.deepcopy(MICRO)
    cfg["datasets"] = {"qiws": {"kind": "local", "path": "data/qiws"}}
    configfile = write_config(tmp_path / "qiws.yaml", cfg)
    rc, out = dry(tmp_path, configfile)
    assert rc == 0, out  # the dry run still shows the grid
    assert "data/qiws/train.jsonl" in out and "datasets.qiws.path" in out
    rc, out = snakemake("--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(configfile))
    assert rc != 0
    assert "nothing was run" in out and "set config key datasets.qiws.path" in out
    assert not (tmp_path / "results").exists()


def test_a_failed_jobs_reason_is_on_the_console_with_the_default_profile(tmp_path):
    """A corrupt JSONL line stops the data job; the profile's show-failed-logs puts the job's
    log, with the line that names file, line and config key, on the console."""
    src = tmp_path / "corrupt"
    src.mkdir()
    for split in ("train", "validation", "test"):
        (src / f"{split}.jsonl").write_text('{"source": "a", "target": "b"}\n')
    (src / "train.jsonl").write_text('{"source": "a", "target": "b"}\n{"source": "a",\n')
    cfg = copy.deepcopy(MICRO)
    cfg["datasets"] = {"odd": {"kind": "local", "path": str(src)}}
    rc, out = snakemake("results/micro/data/odd/data.json", "--profile",
                        str(REPO / "workflow/profiles/default"), "-s", str(REPO / "Snakefile"),
                        "--directory", str(tmp_path), "--configfile",
                        str(write_config(tmp_path / "odd.yaml", cfg)))
    assert rc != 0
    assert "Logfile results/micro/logs/data/odd.log:" in out, out
    assert (f"asymprune.data: error: {src / 'train.jsonl'}:2: not valid JSON") in out
    assert "point config key datasets.odd.path elsewhere" in out


# The micro run's folders have spaces: every rule must quote every path it hands a shell.
MICRO_RUN = dict(copy.deepcopy(MICRO), results_dir="my results", reports_dir="my reports")
# every engine kind end to end: CTranslate2 exports, timed next to eager and compiled, int8
# scored against the main evaluation
MICRO_RUN["benchmark"]["engines"] = ["eager", "compiled", "ct2-float32"]
MICRO_RUN["evaluate"]["engines"] = ["ct2-int8"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    """The micro preset end to end through Snakemake: every stage runs for real."""
    workdir = tmp_path_factory.mktemp("micro")
    rc, out = snakemake("--cores", "2", "-s", str(REPO / "Snakefile"), "--directory",
                        str(workdir), "--configfile",
                        str(write_config(workdir / "micro run.yaml", MICRO_RUN)))
    assert rc == 0, out
    return workdir


def test_micro_preset_end_to_end(micro_run):
    reports = micro_run / "my reports/micro"
    assert (reports / "DONE").exists()
    assert list((reports / "tables").glob("*.csv")) and list((reports / "figures").glob("*.png"))
    # the config as the report's rerun command needs it: relative to where the workflow ran
    side = json.loads((reports / "report.json").read_text())
    assert side["args"]["configfile"] == ["micro run.yaml"]
    results = micro_run / "my results/micro"
    for variant in MICRO_MODELS:
        assert (results / f"eval/micro/news/{variant}.json").exists()
        assert (results / f"ct2/micro/news/{variant}/model.bin").exists()
        scored = json.loads((results / f"eval_engines/micro/news/{variant}/ct2-int8.json")
                            .read_text())
        assert scored["engine"] == "ct2-int8" and 0 <= scored["identical_share"] <= 1
        bench = json.loads((results / f"bench/cpu/micro/news/{variant}.json").read_text())
        assert {r["engine"] for r in bench["results"]} == {"eager", "compiled", "ct2-float32"}
    assert (reports / "tables/precision_micro_news.csv").exists()
    rc, out = dry(micro_run, micro_run / "micro run.yaml")
    assert rc == 0 and "Nothing to be done" in out, out


def test_snakemake_report_is_one_page_with_the_tables_and_figures(micro_run, tmp_path):
    page = tmp_path / "my report.html"
    rc, out = snakemake("--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                        str(micro_run), "--configfile", str(micro_run / "micro run.yaml"),
                        "--report", str(page))
    assert rc == 0, out
    tables = sorted(p.name for p in (micro_run / "my reports/micro/tables").glob("*.html"))
    figures = sorted(p.name for p in (micro_run / "my reports/micro/figures").glob("*.png"))
    assert "pareto_micro_news.html" in tables and "pareto_micro_news.png" in figures
    for name in tables + figures:
        assert f"Adding {name}" in out, name
    assert page.stat().st_size > 100_000


def test_changing_an_evaluation_setting_reruns_evaluation_and_report_only(micro_run, tmp_path):
    cfg = copy.deepcopy(MICRO_RUN)
    cfg["evaluate"]["max_new_tokens"] = 6
    rc, out = dry(micro_run, write_config(tmp_path / "eval.yaml", cfg))
    assert rc == 0, out
    counts = job_counts(out)
    assert counts.pop("evaluate") == len(MICRO_MODELS)
    assert counts.pop("evaluate_engine") == len(MICRO_MODELS)  # ct2-int8 with the same setting
    assert counts.pop("report") == 1
    counts.pop("all", None)
    assert counts == {}, counts


@pytest.mark.parametrize("change, expected", [
    # the disturbed judgement is the report's: a threshold reruns no timing
    (lambda c: c.setdefault("report", {}).update(max_spread=0.5), {"report": 1}),
    (lambda c: c.setdefault("report", {}).update(max_foreign_load=0.5), {"report": 1}),
    # workflow-only keys are not in a benchmark job's params: a new architecture adds its
    # own job, and the trained models' benchmark is not timed again
    (lambda c: c["benchmark"].update(arch_only=["small"]), {"benchmark_arch": 1, "report": 1}),
    # a further engine to score adds its evaluations; the main ones stay
    (lambda c: c["evaluate"].update(engines=["ct2-int8", "ct2-float32"]),
     {"evaluate_engine": len(MICRO_MODELS), "report": 1}),
])
def test_a_report_threshold_or_a_workflow_only_key_reruns_no_timing(micro_run, tmp_path,
                                                                    change, expected):
    cfg = copy.deepcopy(MICRO_RUN)
    change(cfg)
    rc, out = dry(micro_run, write_config(tmp_path / "changed.yaml", cfg))
    assert rc == 0, out
    counts = job_counts(out)
    counts.pop("all", None)
    assert counts == expected, counts


def _copy_of_the_code(tmp_path) -> tuple[Path, dict]:
    copy_root = tmp_path / "code"
    shutil.copytree(REPO / "workflow", copy_root / "workflow")
    shutil.copytree(REPO / "src", copy_root / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "Snakefile", copy_root / "Snakefile")
    shutil.copy(REPO / "config.yaml", copy_root / "config.yaml")
    env = dict(os.environ, PYTHONPATH=str(copy_root / "src"))
    return copy_root, env


@pytest.mark.parametrize("module, expected", [
    ("evaluate.py", {"evaluate": 6, "evaluate_engine": 6, "report": 1}),
    # pruning code: 3 pruned variants are pruned, re-fine-tuned, evaluated and benchmarked
    # again (the one benchmark job times all variants together, the one export job exports
    # them all); the teacher (e6d6), its data and tokenizer are untouched
    ("prune_layers.py", {"prune_layers": 3, "refinetune": 3, "evaluate": 3, "benchmark": 1,
                         "ct2_export": 1, "evaluate_engine": 3, "report": 1}),
    # the exporter: the one export job of micro/news rewrites all 6 exports; the int8 scores of
    # all 6 (params.ct2_code) and the benchmark that times them follow, and so do the eager
    # evaluations, whose stage imports asymprune.ct2 (its code hash covers ct2.py)
    ("ct2.py", {"ct2_export": 1, "evaluate": 6, "evaluate_engine": 6, "benchmark": 1,
                "report": 1}),
])
def test_changing_a_stage_reruns_it_and_downstream_only(micro_run, tmp_path, module, expected):
    copy_root, env = _copy_of_the_code(tmp_path)
    configfile = micro_run / "micro run.yaml"
    rc, out = dry(micro_run, configfile, copy_root / "Snakefile", env=env)
    assert rc == 0 and "Nothing to be done" in out, out  # same code, same hashes
    path = copy_root / "src/asymprune" / module
    path.write_text(path.read_text() + "\n# a change\n")
    rc, out = dry(micro_run, configfile, copy_root / "Snakefile", env=env)
    assert rc == 0, out
    counts = job_counts(out)
    counts.pop("all", None)
    assert counts == expected, out


# Snakemake offers no way to silence a lint. The one left is judged wrong for this project:
# every rule runs `python -m asymprune.<stage>` in the environment that runs Snakemake (built
# by `make env`, or the user's own), which a per-rule conda env or container would duplicate.
ACCEPTED_LINTS = {"Specify a conda environment or container for each rule."}


@pytest.mark.parametrize("configfile", ["config.yaml", "configs/demo.yaml"])
def test_lint_reports_nothing_but_the_accepted_lint(configfile):
    rc, out = snakemake("--lint", "--configfile", configfile)
    titles = {re.sub(r" in line \d+", "", m.group(1)).rstrip(":.") + "."
              for m in re.finditer(r"^\s+\* (.+)$", out, re.M)}
    assert titles == ACCEPTED_LINTS, out


def test_a_second_run_on_the_same_results_folder_is_refused(tmp_path):
    """Snakemake's lock: a second run on a running workflow's folder stops with a message."""
    import time

    first = subprocess.Popen([SNAKEMAKE, "--cores", "1", "-s", str(REPO / "Snakefile"),
                              "--directory", str(tmp_path), "--configfile",
                              str(REPO / "configs/micro.yaml")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        locks = tmp_path / ".snakemake" / "locks"
        deadline = time.time() + 120
        while not (locks.exists() and any(locks.iterdir())):
            assert first.poll() is None and time.time() < deadline, "first run never locked"
            time.sleep(0.2)
        rc, out = snakemake("--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                            str(tmp_path), "--configfile", str(REPO / "configs/micro.yaml"))
        assert rc != 0
        assert "cannot be locked" in out, out
    finally:
        first.terminate()
        first.wait(timeout=60)


def test_config_strings_reach_the_stage_literally_and_run_nothing(tmp_path):
    """Paths and strings with quotes, spaces, $(...), backticks and $HOME are shell-quoted:
    the data job gets them as written, and nothing in them runs or expands."""
    nasty = "it's a \"dir\" $(touch ran1) `touch ran2` $HOME"
    src = tmp_path / nasty
    src.mkdir()
    for split in ("train", "validation", "test"):
        (src / f"{split}.jsonl").write_text('{"source": "some text", "target": "a summary"}\n')
    prefix = f"{nasty}: "
    cfg = copy.deepcopy(MICRO)
    cfg.update(results_dir="my results", reports_dir="my reports",
               datasets={"odd": {"kind": "local", "path": str(src)}},
               data={"source_prefix": prefix})
    target = "my results/micro/data/odd/data.json"
    # the target before --configfile, which takes every file name after it
    rc, out = snakemake(target, "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile",
                        str(write_config(tmp_path / "odd.yaml", cfg)))
    assert rc == 0, out
    rows = [json.loads(line) for line in
            (tmp_path / "my results/micro/data/odd/train.jsonl").read_text().splitlines()]
    assert rows[0]["source"] == prefix + "some text"
    side = json.loads((tmp_path / target).read_text())
    assert side["args"]["path"] == str(src) and side["args"]["source_prefix"] == prefix
    assert not list(tmp_path.rglob("ran*")) and not list(REPO.glob("ran*"))


def test_every_rule_reserves_the_gpus_it_uses(tmp_path):
    """gpus_per_job 2: the training stages (finetune, refinetune, NASH and its fine-tune) run
    DDP under torchrun on 2 pinned GPUs and reserve 2; evaluate and benchmark run one process
    on one pinned GPU and reserve 1; CPU stages reserve none."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["models"] = {"small": cfg["models"]["small"]}
    cfg["models"]["small"]["resources"]["gpus_per_job"] = 2
    cfg["datasets"] = {"xsum": cfg["datasets"]["xsum"]}
    # NASH's batch of 4 over 2 GPUs: 2 per device (4 per device is refused, naming the key)
    cfg.update(variants=["e6d6", "e6d3"], baselines={"variants": []},
               nash={"variants": ["nash-d3-uniform-l0s30"], "train": {"per_device_batch_size": 4},
                     "finetune": {"per_device_batch_size": 2}})
    rc, out = snakemake("-n", "--directory", str(tmp_path), "--configfile",
                        str(write_config(tmp_path / "c.yaml", cfg)))
    assert rc != 0 and ("config key models.small.resources.gpus_per_job: 2 GPUs x "
                        "nash.train.per_device_batch_size 4 does not divide "
                        "nash.train.effective_batch_size 4") in out, out
    cfg["nash"]["train"]["per_device_batch_size"] = 2
    cfg["benchmark"]["arch_only"] = ["small"]
    rc, out = snakemake("-n", "-p", "--directory", str(tmp_path), "--configfile",
                        str(write_config(tmp_path / "c.yaml", cfg)))
    assert rc == 0, out
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+resources: (.*)\n(?:.*\n)*?"
                      r"Shell command: (.*)$", out, re.M)
    seen = {}
    for rule, resources, command in jobs:
        gpu = int(re.search(r"\bgpu=(\d+)", resources).group(1)) if "gpu=" in resources else 0
        ddp = "torch.distributed.run --standalone --nproc_per_node 2" in command
        pinned = re.search(r"gpu_slots --gpus-per-job (\d+)", command)
        seen[rule] = (gpu, ddp, int(pinned.group(1)) if pinned else 0)
    for rule in ("finetune", "refinetune", "nash", "nash_finetune"):
        assert seen[rule] == (2, True, 2), (rule, seen[rule])
    for rule in ("evaluate", "benchmark", "benchmark_arch"):
        assert seen[rule] == (1, False, 1), (rule, seen[rule])
    for rule in ("data", "prune_layers"):
        assert seen[rule] == (0, False, 0), (rule, seen[rule])


def test_released_protocol_variants_get_their_own_settings(tmp_path):
    """nash-d3-uniform-l0s30-rel trains with nash.released's block (the released scripts'
    values) next to the paper protocol's NASH-3, limited to nash.released.sizes and evaluated
    there, not benchmarked (one benchmark output list serves every size)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"] = {"xsum": cfg["datasets"]["xsum"]}
    cfg.update(variants=["e6d6", "e6d3"], baselines={"variants": []})
    cfg["benchmark"]["arch_only"] = []
    rc, out = snakemake("-n", "-p", "--directory", str(tmp_path), "--configfile",
                        str(write_config(tmp_path / "c.yaml", cfg)))
    assert rc == 0, out
    counts = job_counts(out)
    assert counts["nash"] == 3 * 3 + 1           # NASH-2/3/4 on 3 sizes, NASH-3 -rel on small
    assert counts["evaluate"] == 3 * (2 + 3) + 1
    cmds = [line for line in out.splitlines() if "asymprune.nash --teacher" in line]
    rel = [c for c in cmds if "--variant nash-d3-uniform-l0s30-rel" in c]
    paper = [c for c in cmds if "--variant nash-d3-uniform-l0s30 " in c]
    assert len(rel) == 1 and "/small/" in rel[0] and len(paper) == 3
    assert "--config-key nash.released.train" in rel[0]
    assert '"decoder_gates":true' in rel[0] and '"label_padding":"pad"' in rel[0]
    assert '"decoder_gates":false' in paper[0] and "--config-key nash.train" in paper[0]
    ft = [line for line in out.splitlines() if "asymprune.finetune --model" in line
          and "nash-d3-uniform-l0s30-rel/pruned" in line]
    assert len(ft) == 1 and "--config-key nash.released.finetune" in ft[0]
    assert '"learning_rate":0.0003' in ft[0] and '"checkpoint_selection":"best"' in ft[0]
    bench = [line for line in out.splitlines() if "asymprune.benchmark --model" in line]
    assert bench and not any("-rel" in line for line in bench)
    cfg["nash"]["released"]["sizes"] = ["xl"]
    rc, out = dry(tmp_path, write_config(tmp_path / "c.yaml", cfg))
    assert rc != 0 and "config key nash.released.sizes: 'xl' is not a size of models" in out


# --- every command of the README, as written -------------------------------------------------
# `make demo` and `make test` are not run here: they are this suite and the demo, which .ci/run
# runs in full (make test, then make demo). Every other command of a ```bash block runs, as
# cheaply as it can while still failing where a user's would: a Snakemake command that would
# start jobs gets -n (a dry run); a report command runs, unchanged apart from the run it
# reports on (the micro run above: its folder, Snakefile and config), so a missing --cores
# fails as it would for a user; `python -m` commands get --help.
README_SKIPPED = {"make demo", "make test"}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in re.sub(r"\\\n\s*", "", block).splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()
            if cmd and not cmd.startswith("#"):
                commands.append(cmd)
    return commands


def test_readme_has_the_commands_this_test_knows():
    cmds = readme_commands()
    assert README_SKIPPED <= set(cmds), cmds
    assert any("--report" in c for c in cmds) and any("asymprune.plan" in c for c in cmds)


def test_every_readme_command_works_as_written(micro_run):
    venv_bin = str(Path(sys.executable).parent)
    failures = []
    for cmd in readme_commands():
        if cmd in README_SKIPPED:
            continue
        run = cmd.replace(".venv/bin/", venv_bin + "/")
        if "--report" in run:
            run = re.sub(r"--configfile\s+\S+\s*", "", run) + (
                f" -s {REPO / 'Snakefile'} --directory {shlex.quote(str(micro_run))}"
                f" --configfile {shlex.quote(str(micro_run / 'micro run.yaml'))}")
            run = run.replace("report.html", shlex.quote(str(micro_run / "readme report.html")))
        elif "snakemake" in run:
            run += " -n"
        elif " -m asymprune." in f" {run}":
            run = re.sub(r"^python -m", f"{shlex.quote(sys.executable)} -m", run) + " --help"
        else:
            failures.append(f"{cmd}: this test does not know how to run it cheaply")
            continue
        proc = subprocess.run(["bash", "-c", run], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            failures.append(f"{cmd} (ran: {run}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    assert not failures, "\n\n".join(failures)
