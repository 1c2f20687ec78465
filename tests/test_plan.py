"""The grid's bill (asymprune.bill, asymprune.plan): cost model and job enumeration, no torch.

Numbers are derived by hand in the comments; the calibration is a made-up one with round
values, so every estimate can be checked with pen and paper."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asymprune import bill as B
from asymprune import plan, workflow_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
pytestmark = pytest.mark.timeout(60)


def test_block_cost_fit_recovers_a_line_in_the_block_counts():
    # t = 1 + 2 e + 3 d on 6 + 6 blocks: t(6,6) = 31, t(1,6) = 21, t(6,1) = 16
    k = B.BlockCost.fit(6, 6, full=31.0, one_enc=21.0, one_dec=16.0)
    assert (k.a, k.b, k.c) == pytest.approx((1.0, 2.0, 3.0))
    assert k.at(3, 2) == pytest.approx(1 + 6 + 6)
    with pytest.raises(ValueError, match="two depths"):
        B.BlockCost.fit(1, 6, 1.0, 1.0, 1.0)


def test_optimizer_steps_count_like_the_trainer():
    # 2,000 examples / 32 = 62.5 -> 63 steps an epoch; half an epoch: ceil(31.5) = 32
    assert B.optimizer_steps(2000, 32, 0.5, -1) == 32
    assert B.optimizer_steps(2000, 32, 5.0, -1) == 315
    assert B.optimizer_steps(2000, 8, 3.0, 160) == 160  # max_steps wins


def test_training_and_generation_job_times():
    # 5 s start + 32 steps x 32 examples x 0.02 s + 100 eval examples x 0.02 / 3
    assert B.train_job_s(5.0, 32, 32, 0.02, 100) == pytest.approx(5 + 20.48 + 2 / 3)
    # NASH: each example also runs the teacher forward (0.03 / 3 = 0.01)
    assert B.train_job_s(5.0, 10, 8, 0.02, 0, teacher_example_s=0.03) == pytest.approx(
        5 + 80 * 0.03)
    # 100 documents in batches of 50: 100 x 0.01 s encoder + 2 batches x 64 steps x 0.05 s
    assert B.generate_job_s(5.0, 100, 50, 0.01, 0.05, 64) == pytest.approx(5 + 1 + 6.4)


def test_requests_add_the_stated_margins():
    # 1 h estimated -> 90 min + 5; 1,000 MB -> 1,300 -> rounded up to 1,500
    assert B.request(3600, 1000) == (95, 1500)
    # memory: 100 MB process + 1 M params x 16 B (15.26 MB) + 4 MB x 8 examples
    assert B.train_mem_mb(100, 2**20, 4, 8) == pytest.approx(100 + 16 + 32)


def test_bill_groups_jobs_per_rule_with_gpu_hours_and_the_largest_request():
    jobs = [B.Job("refinetune", 3600, 1000, 1, "a"), B.Job("refinetune", 1800, 2000, 1, "b"),
            B.Job("prune_layers", 10, 300, 0, "c")]
    r, p = B.bill(jobs)
    assert (r.rule, r.jobs, r.wall_per_job_s, r.total_s, r.gpu_hours) == (
        "refinetune", 2, 2700, 5400, 1.5)
    assert (r.runtime_min, r.mem_mb) == (95, 3000)  # the longest job, the largest memory
    assert (p.gpu_hours, p.runtime_min) == (0, 6)   # ceil(15 / 60) + 5


def test_cpu_wall_runs_the_serial_rules_alone_and_spreads_the_rest():
    rules = B.bill([B.Job("finetune", 100, 1), B.Job("refinetune", 30, 1),
                    B.Job("refinetune", 50, 1), B.Job("evaluate", 20, 1), B.Job("report", 2, 1)])
    # 100 + 2 alone, (30 + 50 + 20) / 2 cores
    assert B.cpu_wall_s(rules, 2) == pytest.approx(102 + 50)


def fake_calibration(sizes: dict[str, tuple[int, int]]) -> dict:
    """Round numbers: every quantity t = 1 + e + d (units), so a variant's cost is its blocks."""
    def arch(e, d):
        v = 1.0 + e + d
        return {"params": v * 1e6, "train_example_s": v * 0.01, "encode_doc_s": v * 0.001,
                "decode_step_s": v * 0.01, "decode_step_b1_s": v * 0.001,
                "act_mb_per_example": v}
    start = {g: {"s": 5.0, "rss_mb": 300.0} for g in
             ("train", "nash", "infer", "data", "tokenizer", "report")}
    return {"created": "now", "device": {"kind": "cpu", "name": "test CPU", "cores": 2},
            "startup": start,
            "sizes": {s: {"blocks": [e, d], "eval_src": 160, "threads_speedup": 1.5,
                          "full": arch(e, d), "one_enc": arch(1, d), "one_dec": arch(e, 1),
                          # no co-run slowdown; a NASH step costs exactly a student step plus
                          # a teacher forward (ratio 1)
                          "corun_jobs": 2, "corun_slowdown": 1.0,
                          "nash": {"variant": "nash", "blocks": [e, d // 2],
                                   "example_s": 0.01 * (1 + e + d // 2) + 0.01 * (1 + e + d) / 3}}
                      for s, (e, d) in sizes.items()}}


def load(path: Path) -> workflow_config.Resolved:
    return workflow_config.load(yaml.safe_load(path.read_text()), SCHEMA)


def test_paper_grid_jobs_match_the_dry_run_counts():
    """The README's 1,016 jobs: the plan bills all but rule `all` and the 3 architecture-only
    benchmarks (listed as notes), so 1,012 once QIWS's sizes are given."""
    cfg = load(REPO / "config.yaml")
    cal = fake_calibration({"small": (8, 8), "base": (12, 12), "large": (24, 24)})
    jobs, notes = plan.estimate(cfg, cal, {"qiws": {"train": 10, "validation": 5, "test": 5}})
    counts = {}
    for j in jobs:
        counts[j.rule] = counts.get(j.rule, 0) + 1
    # `snakemake -n` on config.yaml: NASH-2/3/4 + 3 baselines on 9 size/data sets, plus NASH-3
    # -rel on small (3 data sets); 198 + 3 evaluations; 2 more engines scored for 22 models
    # per size/data set, whose 22 exports are one job (the -rel ones are neither: common.smk's
    # all_variants())
    assert counts == {"data": 3, "finetune": 9, "prune_layers": 135, "refinetune": 135,
                      "nash": 57, "nash_finetune": 57, "evaluate": 201, "benchmark": 9,
                      "evaluate_engine": 396, "ct2_export": 9, "report": 1}
    assert sum(counts.values()) == 1016 - 3 - 1  # less benchmark_arch x 3 and rule all
    assert any("benchmark_arch" in n for n in notes)
    # without its sizes, QIWS is not billed, and the notes say so and how to fix it
    jobs, notes = plan.estimate(cfg, cal, {})
    assert sum(j.rule == "finetune" for j in jobs) == 6
    assert any("qiws" in n and "--dataset-size" in n for n in notes)


def test_demo_estimates_by_hand():
    cfg = load(REPO / "configs/demo.yaml")
    cal = fake_calibration({"tiny": (6, 6)})
    jobs = {j.key: j for j in plan.estimate(cfg, cal, {})[0]}
    # teacher: 2.5 epochs of ceil(2000 / 32) = 63 steps = ceil(157.5) = 158 steps x 32 x 0.13 s
    # / 1.5 threads + 100 x 0.13 / 1.5 / 3 + 5 s start
    ex = 0.13 / 1.5
    assert jobs["finetune/tiny/news/e6d6"].wall_s == pytest.approx(5 + 158 * 32 * ex + 100 * ex / 3)
    # e3d6 keeps 3 + 6 blocks: 0.10 s an example; a quarter epoch = ceil(15.75) = 16 steps
    assert jobs["refinetune/tiny/news/e3d6"].wall_s == pytest.approx(
        5 + 16 * 32 * 0.10 + 100 * 0.10 / 3)
    # NASH-3 keeps the full encoder (6) and 3 decoder blocks: 0.10 student, 0.13 teacher; eval
    # forward passes of both on 100 validation examples; the demo runs 200 NASH-stage steps
    assert jobs["nash/tiny/news/nash-d3-uniform-l0s30"].wall_s == pytest.approx(
        5 + 200 * 8 * (0.10 + 0.13 / 3) + 100 * 0.10 / 3 + 100 * 0.13 / 3)
    # evaluate e1d1 (3 units): 100 docs x 0.003 s + 1 batch of 100 x min(64, 64) steps x 0.03 s
    assert jobs["evaluate/tiny/news/e1d1"].wall_s == pytest.approx(5 + 0.3 + 1 * 64 * 0.03)


def test_jobs_that_share_the_cpu_are_billed_at_the_measured_corun_slowdown():
    cfg = load(REPO / "configs/demo.yaml")
    cal = fake_calibration({"tiny": (6, 6)})
    alone = {j.key: j.wall_s for j in plan.estimate(cfg, cal, {})[0]}
    cal["sizes"]["tiny"]["corun_slowdown"] = 1.25
    jobs, notes = plan.estimate(cfg, cal, {})
    shared = {j.key: j.wall_s for j in jobs}
    # re-fine-tunes, NASH and evaluations run two at a time on the 2-core CPU: 1.25x; the
    # teacher, the benchmark and the report run alone: unchanged
    assert shared["refinetune/tiny/news/e3d6"] == pytest.approx(
        1.25 * (5 + 16 * 32 * 0.10 + 100 * 0.10 / 3))
    assert shared["nash/tiny/news/nash-d3-uniform-l0s30"] == pytest.approx(
        1.25 * alone["nash/tiny/news/nash-d3-uniform-l0s30"])
    assert shared["evaluate/tiny/news/e1d1"] == pytest.approx(1.25 * (5 + 0.3 + 64 * 0.03))
    for key in ("finetune/tiny/news/e6d6", "benchmark/tiny/news", "report", "data/news"):
        assert shared[key] == alone[key]
    assert any("1.25x" in n for n in notes)
    # a measured slowdown below 1 is noise, not a speed-up; a GPU calibration has none
    cal["sizes"]["tiny"]["corun_slowdown"] = 0.9
    jobs, notes = plan.estimate(cfg, cal, {})
    assert {j.key: j.wall_s for j in jobs} == alone
    assert any("0.90x (noise" in n for n in notes)
    cal["sizes"]["tiny"]["corun_slowdown"] = 1.25
    cal["device"]["kind"] = "cuda"
    assert {j.key: j.wall_s for j in plan.estimate(cfg, cal, {})[0]} == alone


def test_nash_stage_jobs_are_billed_at_the_measured_nash_step_ratio():
    cfg = load(REPO / "configs/demo.yaml")
    cal = fake_calibration({"tiny": (6, 6)})
    # student e6d3 0.10 s + teacher forward 0.13 / 3 = 0.14333 s; measured twice that
    cal["sizes"]["tiny"]["nash"] = {"variant": "nash-d3-uniform-l0s30", "blocks": [6, 3],
                                    "example_s": 2 * (0.10 + 0.13 / 3)}
    k = plan._costs(cal["sizes"]["tiny"])
    assert plan.nash_step_ratio(cal["sizes"]["tiny"], k) == pytest.approx(2.0)
    jobs = {j.key: j for j in plan.estimate(cfg, cal, {})[0]}
    # every training example of the NASH stage costs twice as much; its start-up and the
    # validation's forward passes do not
    assert jobs["nash/tiny/news/nash-d3-uniform-l0s30"].wall_s == pytest.approx(
        5 + 2 * 200 * 8 * (0.10 + 0.13 / 3) + 100 * 0.10 / 3 + 100 * 0.13 / 3)
    # the fine-tune after it is a plain training job
    assert jobs["nash_finetune/tiny/news/nash-d3-uniform-l0s30"].wall_s == pytest.approx(
        jobs["refinetune/tiny/news/e6d3"].wall_s)


def test_the_calibration_times_a_nash_step_at_the_stage_batch():
    pytest.importorskip("torch")
    import torch

    from asymprune import calibrate

    cfg = load(REPO / "configs/demo.yaml")
    full = calibrate.architecture(cfg.models["tiny"])
    out = calibrate.measure_nash(full, "nash-d3-uniform-l0s30", cfg.nash_train,
                                 cfg.layer_selection, device=torch.device("cpu"), cpu=True)
    # NASH-3 keeps the 6 encoder blocks and 3 decoder blocks; the demo's NASH stage runs
    # batches of 8 at 160 + 64 tokens: 8 x 0.66 M parameters x 224 tokens x 8 = 9.4e9 FLOP,
    # under the 1e11 budget, so nothing is shrunk
    assert out["blocks"] == [6, 3] and out["timed_shape"] == [8, 160, 64]
    assert out["example_s"] > 0


def test_a_calibration_without_the_nash_step_or_the_corun_measurement_is_stale():
    cfg = load(REPO / "configs/demo.yaml")
    cal = fake_calibration({"tiny": (6, 6)})
    assert plan.stale(cfg, cal) == []
    del cal["sizes"]["tiny"]["nash"], cal["sizes"]["tiny"]["corun_jobs"]
    assert plan.stale(cfg, cal) == ["tiny: no timed NASH-stage step",
                                    "tiny: no co-run measurement of the 2 CPU cores"]
    cal["device"] = {"kind": "cuda", "name": "a GPU", "cores": 16}   # GPUs: no co-run
    assert plan.stale(cfg, cal) == ["tiny: no timed NASH-stage step"]
    cal["sizes"] = {}
    assert plan.stale(cfg, cal) == ["no calibration of model tiny"]


def test_corun_jobs_one_per_core_within_half_the_free_memory():
    # 4 GB a job: 32 cores but 100 GB free -> 50 GB / 4 GB = 12 jobs; 2 cores -> 2; no room -> 1
    assert calibrate_jobs(32, 4000, 100_000) == 12
    assert calibrate_jobs(2, 400, 20_000) == 2
    assert calibrate_jobs(8, 4000, 3000) == 1


@pytest.mark.timeout(180)
def test_corun_slowdown_runs_its_jobs_at_once_and_reports_their_median():
    pytest.importorskip("torch")
    import torch

    from asymprune import calibrate

    tiny = {"vocab_size": 64, "d_model": 16, "d_ff": 32, "d_kv": 4, "num_heads": 2,
            "num_layers": 1, "num_decoder_layers": 1, "decoder_start_token_id": 0}
    shape = dict(batch=2, src=8, tgt=4, eval_batch=2, eval_src=8,
                 device=torch.device("cpu"), cpu=True)
    # two spawned jobs report their wall time per example; over an "alone" time of 1e-12 s
    # the ratio is huge but finite and positive: both reported, the barrier released them
    ratio = calibrate.corun_slowdown(tiny, shape, 2, 1e-12, timeout_s=150)
    assert 0 < ratio < float("inf") and ratio > 1e3


def calibrate_jobs(cores, job_mb, free_mb):
    from asymprune import calibrate

    return calibrate.corun_jobs(cores, job_mb, free_mb)


def test_check_compares_estimates_with_snakemake_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for key, s, cpu in [("refinetune/tiny/news/e3d6", 40.0, 30.0),
                        ("refinetune/tiny/news/e1d1", 60.0, 50.0)]:
        path = tmp_path / f"{key}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{s}\t0:00:{int(s)}\t500\t0\t0\t0\t0\t0\t50\t{cpu}\n")
    jobs = [B.Job("refinetune", 55.0, 0, 0, "refinetune/tiny/news/e3d6"),
            B.Job("refinetune", 65.0, 0, 0, "refinetune/tiny/news/e1d1"),
            B.Job("evaluate", 5.0, 0, 0, "evaluate/tiny/news/e3d6")]  # never ran: not compared
    [(rule, n, est, wall, err, cpu, cerr)] = plan.check(jobs, plan.measured(tmp_path))
    # 120 estimated vs 100 s wall (+20 %) and 80 s CPU (+50 %)
    assert (rule, n, est, wall, cpu) == ("refinetune", 2, 120.0, 100.0, 80.0)
    assert (err, cerr) == pytest.approx((0.2, 0.5))


def test_cli_prints_the_bill_and_writes_the_resources_snippet(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(fake_calibration({"tiny": (6, 6)})))
    out = tmp_path / "res.yaml"
    r = subprocess.run([sys.executable, "-m", "asymprune.plan", "--configfile",
                        str(REPO / "configs/demo.yaml"), "--calibration", str(cal),
                        "--resources-out", str(out), "--benchmarks", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "refinetune" in r.stdout and "test CPU" in r.stdout
    res = yaml.safe_load(out.read_text())["set-resources"]
    # evaluate e6d6 (13 units): 5 + 100 x 0.013 + 2 x 64 x 0.13 = 22.94 s -> ceil(34.4 / 60) + 5
    assert res["evaluate"] == {"runtime": 6, "mem_mb": 500}
    r = subprocess.run([sys.executable, "-m", "asymprune.plan", "--configfile",
                        str(REPO / "configs/demo.yaml"), "--calibration", str(tmp_path / "no")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--calibrate" in r.stderr


def test_the_bill_needs_no_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, asymprune.plan; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
