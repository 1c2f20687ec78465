"""The report stage on synthetic sidecars whose numbers are chosen by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from asymprune import report
from asymprune.report import decide as D
from asymprune.report import figures as F
from asymprune.report import order as O
from asymprune.report import outputs
from asymprune.report import read as R
from asymprune.report import render
from asymprune.report import tables as T
from asymprune.report.__main__ import rerun_command

SIZES = ("small", "base")
DATASETS = ("cnndm", "xsum")
VARIANTS = ("e6d6", "e6d3", "e3d6", "e3d3", "e6d1", "nash-d3-uniform-l0s30")
LAYERS = {"e6d6": (6, 6), "e6d3": (6, 3), "e3d6": (3, 6), "e3d3": (3, 3), "e6d1": (6, 1),
          "nash-d3-uniform-l0s30": (6, 3)}
BATCH = (1, 4)

# Hand-chosen: small/cnndm R-2 20.0 (e6d6) vs 18.0 (e6d3) -> retention 90 %, impact -10 %;
# fixed BS1 latency 100 ms vs 40 ms -> speedup 2.5.
R2 = {"e6d6": 20.0, "e6d3": 18.0, "e3d6": 17.0, "e3d3": 15.0, "e6d1": 12.0, "nash-d3-uniform-l0s30": 19.0}
MS_BS1 = {"e6d6": 100.0, "e6d3": 40.0, "e3d6": 90.0, "e3d3": 35.0, "e6d1": 20.0, "nash-d3-uniform-l0s30": 45.0}


# What the evaluate stage records (asymprune.records): the budget after the teacher and, for
# NASH, what its stage reached: 30.5 % against a 30 % target, the gates' own 31 %, rounded
# masks at 28 % and 3 units moved to the band.
NASH_FACTS = {"variant": "nash-d3-uniform-l0s30", "protocol": "paper", "target_sparsity": 0.3,
              "reached_sparsity": 0.305, "gates_expected_sparsity": 0.31,
              "mask_sparsity_before_adjustment": 0.28, "units_removed": 3, "units_restored": 0,
              "gates_missed_target": False, "encoder_blocks": [0, 1, 2, 3, 4, 5],
              "decoder_blocks": [0, 2, 5], "parameters": 1234}
# NASH stage 320 steps x 8 examples, then its fine-tune 32 x 32; a re-fine-tune 32 x 32
NASH_PHASES = [{"stage": "nash", "variant": "nash-d3-uniform-l0s30", "steps": 320,
                "effective_batch": 8},
               {"stage": "finetune", "variant": None, "steps": 32, "effective_batch": 32}]
REFINETUNE = [{"stage": "finetune", "variant": None, "steps": 32, "effective_batch": 32}]


def record(variant, facts=None, phases=None):
    e, d = LAYERS[variant]
    if phases is None:
        phases = [] if variant == "e6d6" else NASH_PHASES if facts else REFINETUNE
    return {"encoder_layers": e, "decoder_layers": d, "phases": phases, "nash": facts}


def eval_json(size, dataset, variant, scale=1.0):
    r2 = R2[variant] * scale
    return {"stage": "evaluate", "args": {}, "size": size, "dataset": dataset, "variant": variant,
            "engine": "eager", "metrics": {"rouge1": r2 + 20, "rouge2": r2, "rougeL": r2 + 10,
                        "rougeLsum": r2 + 15, "gen_len": 50.0 + LAYERS[variant][1]},
            "record": record(variant, NASH_FACTS if variant.startswith("nash-") else None)}


ENGINES = ("eager", "compiled")
# the cells every benchmark JSON holds: (protocol, mode, num_beams, batch sizes)
PROTOCOLS = (("paper", "fixed", 1, BATCH), ("paper", "natural", 1, BATCH), ("nash", "natural", 4, (32,)))


def cell_ms(variant, protocol, mode, engine, bs, scale=1.0):
    """Median latency of a synthetic cell: BS1 paper/fixed/eager is exactly MS_BS1.

    Latency grows with batch size, less for shallow decoders (a made-up but monotone model);
    natural length is 0.8 x fixed; the compiled engine takes 0.3 + 0.1 * d/6 of eager's time,
    so a deep decoder gains more from it (e6d6 0.4, e6d3 0.35); NASH's protocol costs 3 x."""
    d = LAYERS[variant][1]
    ms = MS_BS1[variant] * scale * (1 + 0.5 * (bs - 1) * (7 - d) / 6)
    if mode == "natural":
        ms *= 0.8
    if engine == "compiled":
        ms *= 0.3 + 0.1 * d / 6
    if protocol == "nash":
        ms *= 3
    return ms


def bench_json(size, dataset, variant, protocols=PROTOCOLS, scale=1.0, disturbed=()):
    """``disturbed``: (protocol, mode, engine, batch size) cells to flag."""
    e, d = LAYERS[variant]
    results = []
    for protocol, mode, beams, batch_sizes in protocols:
        for engine in ENGINES:
            for bs in batch_sizes:
                ms = cell_ms(variant, protocol, mode, engine, bs, scale)
                flagged = (protocol, mode, engine, bs) in disturbed
                # the mean is 2 ms above the median (one slower run): speedups must not see it.
                # Raw runs only: the report judges the foreign load (0.31 > report
                # max_foreign_load 0.1) and the spread (at most 0.2 < max_spread 0.25)
                results.append({
                    "protocol": protocol, "mode": mode, "engine": engine, "inputs": "real",
                    "batch_size": bs, "num_beams": beams, "mean_ms": ms + 2, "std_ms": 1.0,
                    "median_ms": ms, "min_ms": ms - 1, "max_ms": ms + 7,
                    "runs_ms": [ms - 1, ms, ms + 7], "runs_steps": [4, 4, 4],
                    "ms_per_step_median": ms / 4, "spread": min(8 / ms, 0.2),
                    "foreign_load": 0.31 if flagged else 0.01, "load_avg_1m_before": 0.2,
                    "new_tokens_mean": 4.0 if mode == "fixed" else 3.5, "new_tokens_max": 4,
                    "source_tokens_mean": 16.0, "peak_memory_mb": None, "peak_memory_of": None})
    out = {"stage": "benchmark", "size": size, "variant": variant, "device_label": "cpu",
           "device_name": "synthetic", "dtype": "fp32", "inputs": "real", "source_tokens": 16,
           "model_source": "model" if dataset else "arch", "encoder_layers": e,
           "decoder_layers": d, "params": 1000 * (e + 2 * d), "torch_threads": 1,
           "load_avg_1m_end": 0.2, "ct2_export": None,
           "timed_with": list(VARIANTS), "results": results}
    if dataset is not None:
        out["dataset"] = dataset
    return out


def judged(benches, **kw):
    """Benchmark sidecars -> the report's frame with its judgement (default thresholds)."""
    return T.judge(R.bench_frame(benches, **kw), 0.25, 0.1)


def write_inputs(tmp_path, skip=(), disturbed=None, sizes=SIZES, datasets=DATASETS):
    """``disturbed``: {(size, dataset or None, variant): cells to flag (see bench_json)}.

    A test that looks at one size or data set asks for only those: every size x data set adds
    figures, and drawing them is most of a report's time.
    """
    disturbed = disturbed or {}
    files = {"eval": [], "bench": [], "arch": []}
    for size in sizes:
        scale = 1.0 if size == "small" else 1.2
        for variant in VARIANTS:
            for dataset in datasets:
                if ("eval", size, dataset, variant) not in skip:
                    p = tmp_path / "eval" / size / dataset / f"{variant}.json"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps(eval_json(size, dataset, variant, scale)))
                    files["eval"].append(str(p))
                if ("bench", size, dataset, variant) not in skip:
                    p = tmp_path / "bench" / size / dataset / f"{variant}.json"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps(bench_json(
                        size, dataset, variant, scale=scale,
                        disturbed=disturbed.get((size, dataset, variant), ()))))
                    files["bench"].append(str(p))
            if variant.startswith("e"):
                p = tmp_path / "arch" / size / f"{variant}.json"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(json.dumps(bench_json(
                    size, None, variant, protocols=PROTOCOLS[:1], scale=scale,
                    disturbed=disturbed.get((size, None, variant), ()))))
                files["arch"].append(str(p))
    return files


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """The full synthetic grid reported once with default settings, for the tests that only
    read what it wrote."""
    tmp_path = tmp_path_factory.mktemp("default_report")
    return run_report(tmp_path, write_inputs(tmp_path))


def run_report(tmp_path, files, *flags):
    out = tmp_path / "reports" / "demo"
    argv = ["--eval", *files["eval"], "--bench", *files["bench"], "--bench-arch", *files["arch"],
            "--out-dir", str(out), *flags]
    assert report.main(argv) == 0
    return out


def row(csv, variant, **where):
    df = pd.read_csv(csv)
    for k, v in where.items():
        df = df[df[k] == v]
    return df[df["variant"] == variant].iloc[0]


def test_report_tables_and_figures(default_report):
    out = default_report
    tables, figures = out / "tables", out / "figures"

    # Tables 5-7: retention 100 * 18 / 20 = 90 %; the base model's numbers are all x1.2,
    # so its retention is the same 90 %.
    ret = tables / "retention_cnndm.csv"
    assert row(ret, "e6d3")["small R (%)"] == pytest.approx(90.0)
    assert row(ret, "e6d3")["base R-2"] == pytest.approx(21.6)
    assert row(ret, "e6d6")["small R (%)"] == pytest.approx(100.0)
    # paper order, NASH rows last
    assert list(pd.read_csv(ret)["variant"]) == ["e6d6", "e6d3", "e6d1", "e3d6", "e3d3", "nash-d3-uniform-l0s30"]

    # Tables 16-24: impact of R-1 (38 vs 40) = -5 %, GenL (53 vs 56) = -5.357 %
    det = row(tables / "detail_small_cnndm.csv", "e6d3")
    assert det["R-1 impact (%)"] == pytest.approx(-5.0)
    assert det["GenL impact (%)"] == pytest.approx(100 * (53 / 56 - 1), abs=1e-4)
    assert (det["enc layers"], det["dec layers"]) == (6, 3)

    # Tables 8-10: speedup of medians 100 ms / 40 ms = 2.5 at BS1 (the means, 102 / 42, would
    # give 2.43); impact -10 %.
    sp = row(tables / "speed_cpu_paper_fixed_eager_small_cnndm.csv", "e6d3")
    assert sp["BS1 median ms"] == pytest.approx(40.0)
    assert sp["BS1 speedup"] == pytest.approx(2.5)
    assert sp["BS1 spread"] == pytest.approx(8 / 40)
    assert sp["impact (%)"] == pytest.approx(-10.0)
    assert not sp["BS1 median ms disturbed"] and not sp["BS1 speedup disturbed"]
    # BS4: e6d6 100 * (1 + 0.5 * 3 * 1/6) = 125 ms; e6d3 40 * (1 + 0.5 * 3 * 4/6) = 80 ms
    assert sp["BS4 speedup"] == pytest.approx(125 / 80)
    assert "BS1 new tokens" in pd.read_csv(
        tables / "speed_cpu_paper_natural_eager_small_cnndm.csv")
    summary = row(tables / "speedup_summary_cpu_paper_fixed_eager.csv", "nash-d3-uniform-l0s30")
    assert summary["base/xsum speedup BS1"] == pytest.approx(100 / 45)
    assert summary["small/cnndm R-L"] == pytest.approx(29.0)

    # architecture-only: 90 ms for e3d6 -> 100 / 90
    arch = row(tables / "arch_speed_cpu_paper_fixed_eager.csv", "e3d6")
    assert arch["small BS1 speedup"] == pytest.approx(100 / 90)
    assert arch["small params"] == 1000 * (3 + 12)

    md = (tables / "retention_cnndm.md").read_text()
    assert "90.00" in md and "nash-d3-uniform-l0s30" in md
    assert "<td>90.00</td>" in (tables / "retention_cnndm.html").read_text()

    expected = ["retention_cnndm", "retention_xsum", "detail_small_cnndm", "detail_base_xsum",
                "speed_cpu_paper_fixed_eager_small_cnndm",
                "speed_cpu_paper_natural_compiled_base_xsum",
                "speed_cpu_nash_natural_eager_small_cnndm",
                "speedup_summary_cpu_paper_fixed_eager", "speedup_summary_cpu_nash_natural_compiled",
                "speedup_by_engine_cpu_paper_fixed_small_cnndm",
                "compiled_vs_eager_cpu_nash_natural_base_xsum",
                "arch_speed_cpu_paper_fixed_compiled", "benchmark_cells", "pareto_small_cnndm",
                "pareto_base_xsum", "recommendation"]
    for name in expected:
        for ext in ("csv", "md", "html"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0, name
    figs = ["fig1_quality_vs_speedup_cpu_paper_fixed_eager",
            "fig1_quality_vs_speedup_cpu_nash_natural_compiled",
            "fig3_rouge2_vs_layers_cnndm", "fig3_rouge2_vs_layers_xsum",
            "fig5_speedup_vs_batch_cpu_paper_natural_compiled",
            "fig5_arch_speedup_vs_batch_cpu_paper_fixed_eager", "pareto_small_cnndm"]
    for name in figs:
        png = figures / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert (figures / f"{name}.pdf").stat().st_size > 0
    # one batch size (NASH's 32): no speedup-vs-batch figure
    assert not (figures / "fig5_speedup_vs_batch_cpu_nash_natural_eager.png").exists()

    side = json.loads((out / "report.json").read_text())
    assert side["stage"] == "report"
    assert "figures/fig1_quality_vs_speedup_cpu_paper_fixed_eager.png" in side["files"]
    assert side["disturbed_benchmarks"] == []
    assert (out / "disturbed_benchmarks.txt").read_text() == ""
    # tables: 2 retention + 4 detail + 4 nash + 4 size/dataset x (3 protocol/mode x 2 engines
    # speed + 3 by engine + 3 compiled/eager + 1 pareto) + 6 summary + 2 arch + 1 cells + 1
    # recommendation, each csv, md and html; figures: 6 fig1 + 2 fig3 + 4 fig5 + 2 arch fig5
    # + 4 pareto, each png and pdf
    n_tables = 2 + 4 + 4 + 4 * (6 + 3 + 3 + 1) + 6 + 2 + 1 + 1
    assert len(side["files"]) == 3 * n_tables + 2 * (6 + 2 + 4 + 2 + 4)


def test_speedup_uses_the_median_not_the_mean():
    frame = judged([("a.json", bench_json("small", "cnndm", "e6d6")),
                           ("b.json", bench_json("small", "cnndm", "e6d3"))])
    sp = T.speed_frame(R.eval_frame([("c", eval_json("small", "cnndm", v))
                                     for v in ("e6d6", "e6d3")]), frame)
    cell = sp[(sp["variant"] == "e6d3") & (sp["protocol"] == "paper") & (sp["mode"] == "fixed")
              & (sp["engine"] == "eager") & (sp["batch_size"] == 1)].iloc[0]
    assert cell["speedup"] == pytest.approx(100 / 40)  # medians; means give 102 / 42


def test_a_disturbed_cell_is_marked_in_every_table_and_left_out_of_figures(tmp_path):
    flagged = ("paper", "fixed", "eager", 1)
    files = write_inputs(tmp_path, disturbed={("small", "cnndm", "e6d3"): [flagged]},
                         sizes=("small",))
    out = run_report(tmp_path, files)
    tables = out / "tables"

    speed = tables / "speed_cpu_paper_fixed_eager_small_cnndm"
    r = row(f"{speed}.csv", "e6d3")
    assert r["BS1 median ms disturbed"] and r["BS1 speedup disturbed"]
    assert not r["BS4 median ms disturbed"] and not r["BS4 speedup disturbed"]
    assert not row(f"{speed}.csv", "e6d6")["BS1 median ms disturbed"]
    md = Path(f"{speed}.md").read_text()
    # tabulate pads cells: compare them stripped
    cells = [c.strip() for line in md.splitlines() if line.startswith("|")
             for c in line.strip("|").split("|")]
    assert "40.00†" in cells and "2.50†" in cells and "100.00" in cells
    assert "† disturbed:" in md
    assert "† e6d3 small/cnndm, paper protocol, fixed length, eager, BS1: foreign load 0.31 > 0.1" in md
    assert "40.00†" in Path(f"{speed}.html").read_text()
    # the same cell elsewhere: summary, engines side by side, compiled/eager, all cells, Pareto
    assert row(tables / "speedup_summary_cpu_paper_fixed_eager.csv",
               "e6d3")["small/cnndm speedup BS1 disturbed"]
    assert row(tables / "speedup_by_engine_cpu_paper_fixed_small_cnndm.csv",
               "e6d3")["BS1 eager speedup disturbed"]
    assert not row(tables / "speedup_by_engine_cpu_paper_fixed_small_cnndm.csv",
                   "e6d3")["BS1 compiled speedup disturbed"]
    assert row(tables / "compiled_vs_eager_cpu_paper_fixed_small_cnndm.csv",
               "e6d3")["BS1 compiled/eager disturbed"]
    cells = row(tables / "benchmark_cells.csv", "e6d3", size="small", dataset="cnndm",
                protocol="paper", mode="fixed", engine="eager", **{"batch size": 1})
    assert cells["disturbed"] and cells["disturbed why"] == "foreign load 0.31 > 0.1"
    pareto = row(tables / "pareto_small_cnndm.csv", "e6d3", engine="eager")
    assert pareto["disturbed"] and not pareto["on_front"]
    # another data set's table shows no † and no footnote
    assert "†" not in (tables / "speed_cpu_paper_fixed_eager_small_xsum.md").read_text()

    # the figure data: the flagged cell is not among the points
    bench = judged([(f, json.loads(Path(f).read_text())) for f in files["bench"]])
    ev = R.eval_frame([(f, json.loads(Path(f).read_text())) for f in files["eval"]])
    sp = T.speed_frame(ev, bench)
    points, n_out = F.plotted_points(sp)
    assert n_out == 1 and len(points) == len(sp) - 1
    assert not ((points["variant"] == "e6d3") & (points["size"] == "small")
                & (points["dataset"] == "cnndm") & (points["engine"] == "eager")
                & (points["mode"] == "fixed") & (points["batch_size"] == 1)).any()


def test_a_disturbed_baseline_marks_every_speedup_of_its_key(tmp_path):
    flagged = ("paper", "fixed", "eager", 1)
    files = write_inputs(tmp_path, disturbed={("small", "cnndm", "e6d6"): [flagged]},
                         sizes=("small",), datasets=("cnndm",))
    out = run_report(tmp_path, files)
    t = pd.read_csv(out / "tables/speed_cpu_paper_fixed_eager_small_cnndm.csv")
    assert t["BS1 speedup disturbed"].all()  # every variant's BS1 speedup divides by it
    assert not t["BS4 speedup disturbed"].any()
    assert list(t.loc[t["BS1 median ms disturbed"], "variant"]) == ["e6d6"]  # latency: its own
    md = (out / "tables/speed_cpu_paper_fixed_eager_small_cnndm.md").read_text()
    assert md.count("2.50†") == 1 and "† e6d6 small/cnndm" in md
    # compiled engine has its own e6d6 cell: unmarked
    t = pd.read_csv(out / "tables/speed_cpu_paper_fixed_compiled_small_cnndm.csv")
    assert not t["BS1 speedup disturbed"].any()

    bench = judged([(f, json.loads(Path(f).read_text())) for f in files["bench"]])
    ev = R.eval_frame([(f, json.loads(Path(f).read_text())) for f in files["eval"]])
    points, n_out = F.plotted_points(T.speed_frame(ev, bench))
    assert n_out == len(VARIANTS)  # the whole key: all 6 variants' speedups left out


def test_disturbed_benchmarks_list_and_the_rerun_command(tmp_path, caplog):
    files = write_inputs(tmp_path, disturbed={
        ("base", "xsum", "e3d3"): [("paper", "natural", "compiled", 4)],
        ("small", None, "e6d1"): [("paper", "fixed", "eager", 1)]}, datasets=("xsum",))
    with caplog.at_level("INFO", logger="asymprune.report"):
        out = run_report(tmp_path, files)
    listed = (out / "disturbed_benchmarks.txt").read_text().splitlines()
    assert listed == sorted([str(tmp_path / "bench/base/xsum/e3d3.json"),
                             str(tmp_path / "arch/small/e6d1.json")])
    list_file = out / "disturbed_benchmarks.txt"
    command = f"snakemake --cores all --forcerun $(cat {list_file})"  # default config.yaml
    assert command in caplog.text
    assert json.loads((out / "report.json").read_text())["rerun_disturbed_command"] == command
    assert command in (out / "tables/benchmark_cells.md").read_text()


def test_the_rerun_command_names_the_config_and_survives_paths_with_spaces(tmp_path):
    list_file = tmp_path / "my reports" / "disturbed_benchmarks.txt"
    cmd = rerun_command(list_file, ["my results/micro/bench/cpu/x/e6d6.json"],
                               ["my run.yaml"])
    assert cmd == (f"xargs -d '\\n' -a '{list_file}' snakemake --configfile 'my run.yaml' "
                   f"--cores all --forcerun")
    cmd = rerun_command(list_file, ["results/demo/bench/cpu/x/e6d6.json"],
                               ["configs/demo.yaml"])
    assert cmd == (f"snakemake --configfile configs/demo.yaml --cores all --forcerun "
                   f"$(cat '{list_file}')")


def test_pareto_front_on_hand_made_points():
    # (ms, R-2): A fastest and worst; B dominated by C (slower and worse); D best; E = D's
    # quality but slower (dominated); F a tie with C (both on the front)
    pts = {"A": (10, 12.0), "B": (30, 14.0), "C": (20, 15.0), "D": (40, 19.0), "E": (50, 19.0),
           "F": (20, 15.0)}
    front = dict(zip(pts, D.pareto_front(list(pts.values()))))
    assert front == {"A": True, "B": False, "C": True, "D": True, "E": False, "F": True}


def pareto_cells(disturbed=()):
    """One device/engine of a Pareto table by hand: e6d6 is the baseline (R-2 20.0)."""
    rows = [("e6d6", 20.0, 100.0), ("e6d3", 19.0, 50.0), ("e3d3", 17.0, 35.0),
            ("e6d1", 15.0, 20.0), ("e1d1", 10.0, 10.0)]
    return pd.DataFrame({"variant": [r[0] for r in rows], "R-2": [r[1] for r in rows],
                         "retention (%)": [100 * r[1] / 20.0 for r in rows],
                         "median ms": [r[2] for r in rows],
                         "disturbed": [r[0] in disturbed for r in rows]})


def test_recommendation_under_budget_floor_both_and_neither():
    cells = pareto_cells()
    # budget 50 ms: e6d3 (R-2 19.0), e3d3, e6d1, e1d1 fit; the best R-2 is e6d3
    assert D.recommend(cells, 50, None)[0] == "e6d3"
    # floor 80 %: R-2 >= 16.0 -> e6d6, e6d3, e3d3; the fastest is e3d3 (35 ms)
    assert D.recommend(cells, None, 80)[0] == "e3d3"
    # both: <= 30 ms and >= 70 % (R-2 14.0): only e6d1 (20 ms, 75 %)
    variant, reason = D.recommend(cells, 30, 70)
    assert variant == "e6d1" and "median <= 30 ms and R-2 retention >= 70 %" in reason
    # nothing meets both
    variant, reason = D.recommend(cells, 15, 90)
    assert variant is None and "none of 5 undisturbed variants" in reason
    variant, reason = D.recommend(cells, None, None)
    assert variant is None and "neither report.latency_budget_ms nor" in reason
    # a disturbed cell is never recommended: e6d3 disturbed -> the best within 50 ms is e3d3
    variant, reason = D.recommend(pareto_cells(disturbed={"e6d3"}), 50, None)
    assert variant == "e3d3" and "1 disturbed or not evaluated left out" in reason


def test_recommendation_from_the_report_settings(tmp_path, caplog, default_report):
    files = write_inputs(tmp_path, sizes=("small",), datasets=("cnndm",))
    # small/cnndm fixed BS1, eager: e6d6 100, e6d3 40, e3d6 90, e3d3 35, e6d1 20, nash 45 ms;
    # compiled x (0.3 + 0.1 d/6): 40, 14, 36, 12.25, 6.33, 15.75 ms; R-2 20, 18, 17, 15, 12,
    # 19 on both (compiled gives eager's tokens). One front over both engines; budget 16 ms:
    # compiled e6d3, e3d3, e6d1, nash fit, the best R-2 is nash on compiled.
    with caplog.at_level("INFO", logger="asymprune.report"):
        out = run_report(tmp_path, files, "--latency-budget-ms", "16")
    rec = row(out / "tables/recommendation.csv", "nash-d3-uniform-l0s30", size="small",
              dataset="cnndm", engine="compiled")
    assert rec["median ms"] == pytest.approx(15.75) and rec["retention (%)"] == pytest.approx(95)
    assert rec["reason"].startswith("nash-d3-uniform-l0s30 on compiled: 16 ms, R-2 retention "
                                    "95 %; best R-2 of the 4 with median <= 16 ms")
    assert "recommendation for small/cnndm on cpu: nash-d3-uniform-l0s30 on compiled" \
        in caplog.text
    pareto = pd.read_csv(out / "tables/pareto_small_cnndm.csv")
    front = {(r["variant"], r["engine"]) for r in pareto.to_dict("records") if r["on_front"]}
    # compiled e6d1 (6.33 ms, 12), e3d3 (12.25, 15), e6d3 (14, 18), nash (15.75, 19), e6d6
    # (40, 20); compiled e3d6 (36, 17) is slower and worse than compiled e6d3, and every eager
    # pair is dominated by its compiled twin (same R-2, faster)
    assert front == {("e6d1", "compiled"), ("e3d3", "compiled"), ("e6d3", "compiled"),
                     ("nash-d3-uniform-l0s30", "compiled"), ("e6d6", "compiled")}
    e6d6 = pareto[(pareto["variant"] == "e6d6") & (pareto["engine"] == "compiled")].iloc[0]
    assert e6d6["speedup vs e6d6 eager"] == pytest.approx(100 / 40)
    assert (out / "figures/pareto_small_cnndm.png").stat().st_size > 10_000

    # the settings block as the workflow passes it, quality floor 90 %: R-2 >= 18 -> e6d3
    out = run_report(tmp_path, files, "--settings", '{"quality_floor": 90, "batch_size": 1}',
                     "--config-key", "report")
    rec = pd.read_csv(out / "tables/recommendation.csv")
    assert set(rec["variant"]) == {"e6d3"}

    # neither: no variant, and the table says why
    rec = pd.read_csv(default_report / "tables/recommendation.csv")
    assert rec["variant"].isna().all()
    assert "no recommendation" in (default_report / "tables/recommendation.md").read_text()


def test_report_batch_size_must_have_been_benchmarked(tmp_path):
    files = write_inputs(tmp_path)
    with pytest.raises(ValueError, match=r"config key report.batch_size: no paper-protocol, "
                                         r"fixed-length benchmark cell at batch size 8 "
                                         r"\(timed: \[1, 4\]\)"):
        run_report(tmp_path, files, "--batch-size", "8")


def test_a_bad_report_setting_names_the_config_key(tmp_path, capsys):
    files = write_inputs(tmp_path)
    with pytest.raises(SystemExit):
        run_report(tmp_path, files, "--settings", '{"quality_floor": 0}', "--config-key",
                   "report")
    assert "report.quality_floor" in capsys.readouterr().err


def test_speedup_per_engine_side_by_side_and_the_compiled_eager_ratio(default_report):
    out = default_report
    by_engine = row(out / "tables/speedup_by_engine_cpu_paper_fixed_small_cnndm.csv", "e6d3")
    # eager 100 / 40 = 2.5; compiled (100 x 0.4) / (40 x 0.35) = 2.857: each engine's own e6d6
    assert by_engine["BS1 eager speedup"] == pytest.approx(2.5)
    assert by_engine["BS1 compiled speedup"] == pytest.approx(40 / 14)
    columns = list(pd.read_csv(out / "tables/speedup_by_engine_cpu_paper_fixed_small_cnndm.csv"))
    assert columns.index("BS1 eager speedup") < columns.index("BS1 compiled speedup") \
        < columns.index("BS4 eager speedup")
    ratio = row(out / "tables/compiled_vs_eager_cpu_paper_fixed_small_cnndm.csv", "e6d3")
    assert ratio["BS1 eager ms"] == pytest.approx(40.0)
    assert ratio["BS1 compiled/eager"] == pytest.approx(0.35)


def test_no_compiled_vs_eager_table_with_one_engine(tmp_path):
    files = write_inputs(tmp_path, sizes=("small",), datasets=("cnndm",))
    for f in files["bench"]:
        obj = json.loads(Path(f).read_text())
        obj["results"] = [c for c in obj["results"] if c["engine"] == "eager"]
        Path(f).write_text(json.dumps(obj))
    out = run_report(tmp_path, files)
    assert not list((out / "tables").glob("compiled_vs_eager_*"))
    assert (out / "tables/speedup_by_engine_cpu_paper_fixed_small_cnndm.csv").exists()


def test_nash_protocol_is_labelled(default_report):
    out = default_report
    md = (out / "tables/speed_cpu_nash_natural_eager_small_cnndm.md").read_text()
    assert md.startswith("**Latency and speedup (NASH protocol: beam 4, batch 32; natural "
                         "output length; eager engine")
    assert "BS32 speedup" in md
    paper = (out / "tables/speed_cpu_paper_fixed_eager_small_cnndm.md").read_text()
    assert "(paper protocol: greedy, batch 1/4; fixed output length" in paper
    assert "NASH protocol: beam 4, batch 32" in \
        (out / "tables/speedup_summary_cpu_nash_natural_eager.html").read_text()


def test_old_benchmark_json_is_an_error_naming_the_key():
    obj = bench_json("small", "cnndm", "e6d6")
    del obj["results"][0]["engine"]
    with pytest.raises(ValueError, match=r"results\[0\] has no 'engine'"):
        judged([("x.json", obj)])


def test_missing_eval_baseline_is_an_error(tmp_path):
    files = write_inputs(tmp_path, skip={("eval", "base", "xsum", "e6d6")})
    with pytest.raises(ValueError, match="missing baseline: no e6d6 eval for size base, "
                                         "dataset xsum"):
        run_report(tmp_path, files)
    assert not (tmp_path / "reports").exists()  # failed before writing anything


def test_missing_bench_baseline_is_an_error(tmp_path):
    files = write_inputs(tmp_path, skip={("bench", "small", "cnndm", "e6d6")})
    with pytest.raises(ValueError, match="missing baseline: no e6d6 benchmark for device cpu, "
                                         "protocol paper, mode fixed, engine eager, size small, "
                                         "dataset cnndm, batch_size 1"):
        run_report(tmp_path, files)


def test_missing_label_names_the_file(tmp_path):
    files = write_inputs(tmp_path)
    bad = json.loads(open(files["eval"][0]).read())
    del bad["size"]
    open(files["eval"][0], "w").write(json.dumps(bad))
    with pytest.raises(ValueError, match=r"missing top-level 'size'"):
        run_report(tmp_path, files)


def test_missing_metric_is_an_error():
    obj = eval_json("small", "cnndm", "e6d6")
    del obj["metrics"]["rougeLsum"]
    with pytest.raises(ValueError, match="rougeLsum"):
        R.eval_frame([("x.json", obj)])


def test_paper_arithmetic():
    # Table 25 (small, QIWS): R-2 28.90 vs 29.03, 293 ms vs 524 ms
    assert T.impact(28.90, 29.03) == pytest.approx(-0.45, abs=0.005)
    assert T.retention(28.90, 29.03) == pytest.approx(99.55, abs=0.005)
    assert T.speedup(524, 293) == pytest.approx(1.79, abs=0.005)


def test_variant_order_and_groups():
    assert O.sort_variants(["nash-d3-uniform-l0s30", "e1d1", "e6d6", "nash-d2-low-l0s30",
                            "e3d6", "e6d2", "nash-d2-uniform-l0s30"]) == [
        "e6d6", "e6d2", "e3d6", "e1d1", "nash-d2-low-l0s30", "nash-d2-uniform-l0s30",
        "nash-d3-uniform-l0s30"]
    assert [O.variant_group(v) for v in ("e6d6", "e6d2", "e3d6", "e2d2", "e3d5", "nash-d2-high-none")] == [
        "baseline", "decoder", "encoder", "both", "other", "nash"]
    with pytest.raises(ValueError, match="is neither e"):
        O.variant_key("e7d6")


def test_retention_against_a_zero_baseline_is_undefined_not_a_number_made_up():
    import math

    from asymprune.report import tables

    assert math.isnan(tables.retention(3.0, 0.0))
    assert math.isnan(tables.impact(3.0, 0.0))
    assert tables.retention(18.0, 20.0) == 90.0


def test_nash_table_puts_reached_sparsity_next_to_the_target(default_report):
    out = default_report
    r = row(out / "tables" / "nash_small_cnndm.csv", "nash-d3-uniform-l0s30")
    assert r["target (%)"] == pytest.approx(30.0)
    assert r["reached (%)"] == pytest.approx(30.5)
    assert r["gates' expected (%)"] == pytest.approx(31.0)
    assert r["masks before adjustment (%)"] == pytest.approx(28.0)
    assert r["units moved"] == 3
    assert r["R-2 impact (%)"] == pytest.approx(-5.0)  # 19.0 vs 20.0
    assert (r["decoder blocks"], r["steps"], r["examples"]) == (3, 352, 320 * 8 + 32 * 32)


def _eval_records(extra=()):
    """small/cnndm eval records of VARIANTS plus ``extra`` (variant, R-2, record) rows."""
    recs = [(f"{v}.json", eval_json("small", "cnndm", v)) for v in VARIANTS]
    for variant, r2, rec in extra:
        obj = eval_json("small", "cnndm", "e6d3")
        obj.update(variant=variant, record=rec)
        obj["metrics"]["rouge2"] = r2
        recs.append((f"{variant}.json", obj))
    return recs


def test_nash_table_compares_at_equal_budget():
    # equal-budget twins of e6d3 (3 decoder blocks, as NASH's): same phases as NASH's
    twin = [dict(NASH_PHASES[0], variant="e6d3-kd"), NASH_PHASES[1]]
    recs = _eval_records([("e6d3-kd", 18.5, record("e6d3", phases=twin)),
                          ("e6d3-ce", 18.2, record("e6d3", phases=[
                              dict(NASH_PHASES[0], variant="e6d3-ce"), NASH_PHASES[1]]))])
    ev = R.eval_frame(recs)
    t = T.nash_tables(recs, ev)[("small", "cnndm")]
    # NASH-3 first, then its twins (kd before ce), then the re-fine-tuned e6d3; e3d3 (3 decoder
    # blocks, half the encoder, no twin) and the other depths are not NASH's comparison
    assert list(t["variant"]) == ["nash-d3-uniform-l0s30", "e6d3-kd", "e6d3-ce", "e6d3"]
    assert list(t["examples"]) == [3584, 3584, 3584, 1024]
    assert list(t["kind"]) == ["NASH", "equal budget, distilled (kd)",
                               "equal budget, cross-entropy (ce)", "re-fine-tuned"]
    assert t["R-2"].tolist() == [19.0, 18.5, 18.2, 18.0]
    assert t.loc[1, "reached (%)"] != t.loc[1, "reached (%)"]  # NaN: no gates


def test_nash_table_shows_both_protocols_with_their_examples():
    """A -rel variant (the released code's protocol) sits right after its paper twin, with
    its own budget: 3 epochs x 16 in the NASH stage, 3 x 8 in its fine-tune."""
    rel = "nash-d3-uniform-l0s30-rel"
    phases = [{"stage": "nash", "variant": rel, "steps": 160, "effective_batch": 16},
              {"stage": "finetune", "variant": None, "steps": 128, "effective_batch": 8}]
    twin = [dict(NASH_PHASES[0], variant="e6d3-kd"), NASH_PHASES[1]]
    recs = _eval_records([(rel, 19.5, record("e6d3", dict(NASH_FACTS, variant=rel,
                                                         protocol="released"), phases)),
                          ("e6d3-kd", 18.5, record("e6d3", phases=twin))])
    t = T.nash_tables(recs, R.eval_frame(recs))[("small", "cnndm")]
    assert list(t["variant"]) == ["nash-d3-uniform-l0s30", rel, "e6d3-kd", "e6d3"]
    assert list(t["protocol"]) == ["paper", "released", "paper", ""]
    assert list(t["examples"]) == [3584, 160 * 16 + 128 * 8, 3584, 1024]


def test_gates_that_missed_the_target_are_marked():
    recs = _eval_records()
    nash = next(o for _, o in recs if o["variant"].startswith("nash-"))
    nash["record"]["nash"] = dict(NASH_FACTS, gates_expected_sparsity=0.36,
                                  gates_missed_target=True)
    t = T.nash_tables(recs, R.eval_frame(recs))[("small", "cnndm")]
    md = render.to_markdown(t)
    assert "36.00†" in md and "gate_miss_tolerance: nash-d3-uniform-l0s30" in md


def test_nash_eval_without_its_record_is_an_error():
    recs = _eval_records()
    nash = next(o for _, o in recs if o["variant"].startswith("nash-"))
    nash["record"]["nash"] = None
    with pytest.raises(ValueError, match="without the NASH stage's facts"):
        T.nash_tables(recs, R.eval_frame(recs))
    del nash["record"]
    with pytest.raises(ValueError, match="record has no 'record'|must be an object"):
        T.nash_tables(recs, R.eval_frame(recs))
    nash["record"] = record("nash-d3-uniform-l0s30", dict(NASH_FACTS, reached_sparsity=30.5))
    with pytest.raises(ValueError, match=r"record.nash.reached_sparsity must be a fraction"):
        T.nash_tables(recs, R.eval_frame(recs))


def test_quality_per_engine_and_precision_sits_next_to_the_main_evaluation():
    ev = R.eval_frame([(f"{v}.json", eval_json("small", "cnndm", v)) for v in ("e6d6", "e6d3")])
    # int8 by hand: e6d6 R-2 19.0 (95 % of 20.0), 9 of 10 documents as eager; e6d3 17.1 (85.5 %)
    eng = R.engine_eval_frame([
        (f"{v}-int8.json", {**eval_json("small", "cnndm", v), "engine": "ct2-int8",
                            "metrics": {**eval_json("small", "cnndm", v)["metrics"],
                                        "rouge2": r2}, "identical_share": share})
        for v, r2, share in (("e6d6", 19.0, 0.9), ("e6d3", 17.1, 0.6))])
    t = T.precision_tables(ev, eng)[("small", "cnndm")].set_index("variant")
    assert t.loc["e6d6", "R-2 eager"] == 20.0 and t.loc["e6d6", "R-2 ct2-int8"] == 19.0
    assert t.loc["e6d6", "retention ct2-int8 (%)"] == pytest.approx(95.0)
    assert t.loc["e6d3", "retention eager (%)"] == pytest.approx(90.0)
    assert t.loc["e6d3", "retention ct2-int8 (%)"] == pytest.approx(85.5)
    assert t.loc["e6d3", "same as eager (%)"] == pytest.approx(60.0)
    # quality of a pair: eager and compiled share the main evaluation, ct2-int8 has its own,
    # ct2-float32 (timed, not evaluated) has none and cannot be on the front
    q = T.quality_frame(ev, eng).set_index(["variant", "engine"])["R-2"]
    assert q[("e6d3", "compiled")] == 18.0 and q[("e6d3", "ct2-int8")] == 17.1
    assert ("e6d3", "ct2-float32") not in q.index
    with pytest.raises(ValueError, match="scored twice"):
        T.quality_frame(ev, R.engine_eval_frame([("x.json", {
            **eval_json("small", "cnndm", "e6d6"), "identical_share": 1.0})]))


def test_a_report_where_every_cell_is_disturbed_still_writes_its_tables(tmp_path, caplog):
    """A busy machine can flag every timing: the report then writes every table with its †s,
    draws no latency figure (saying why) and recommends nothing; it does not crash."""
    every = [(p, m, e, bs) for p, m, _, sizes in PROTOCOLS for e in ENGINES for bs in sizes]
    flagged = {("small", d, v): every for d in ("cnndm",) for v in VARIANTS}
    flagged.update({("small", None, v): every for v in VARIANTS})
    files = write_inputs(tmp_path, disturbed=flagged, sizes=("small",), datasets=("cnndm",))
    out = run_report(tmp_path, files)
    speed = out / "tables" / "speed_cpu_paper_fixed_eager_small_cnndm.csv"
    assert row(speed, "e6d3")["BS1 speedup disturbed"]
    assert not list((out / "figures").glob("fig1_*"))
    assert "all of its" in caplog.text and "cells are disturbed" in caplog.text


def test_every_registered_output_is_listed_in_the_docs_as_generated():
    """One registry names every output: the stage's files, its stale-file cleaning and
    docs/report.md (regenerate with `python -m asymprune.report.outputs`)."""
    doc = (Path(__file__).resolve().parents[1] / "docs/report.md").read_text()
    assert outputs.listing() in doc
    every = [*outputs.TABLES.values(), *outputs.FIGURES.values(), *outputs.FILES.values()]
    assert all(o.pattern in doc for o in every)
    assert "precision_" in outputs.table_prefixes() and "fig3_" in "".join(
        outputs.figure_prefixes())


def test_the_default_report_writes_only_registered_names(default_report):
    side = json.loads((default_report / "report.json").read_text())
    tables = outputs.table_prefixes()
    figures = outputs.figure_prefixes()
    for f in side["files"]:
        folder, name = f.split("/")
        assert name.startswith(tables if folder == "tables" else figures), f


def test_help_lists_every_registered_output(capsys):
    from asymprune.report.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert outputs.listing() in capsys.readouterr().out
