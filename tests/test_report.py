"""The report stage on synthetic sidecars whose numbers are chosen by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from asymprune import report
from asymprune import tables as T

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


# What the NASH stage records (reached 30.5 % against a 30 % target), as the eval sidecar
# embeds it: model_sidecar (final fine-tune) -> parent (the NASH stage).
NASH_SIDECAR = {"stage": "nash", "target_sparsity": 0.3, "reached_sparsity": 0.305,
                "expected_sparsity_final": 0.31, "kept": {"decoder_blocks": [0, 2, 5]},
                "parameters": {"pruned": 1234}}


def eval_json(size, dataset, variant, scale=1.0):
    r2 = R2[variant] * scale
    out = {"stage": "evaluate", "args": {}, "size": size, "dataset": dataset, "variant": variant,
           "metrics": {"rouge1": r2 + 20, "rouge2": r2, "rougeL": r2 + 10,
                       "rougeLsum": r2 + 15, "gen_len": 50.0 + LAYERS[variant][1]}}
    if variant.startswith("nash-"):
        out["model_sidecar"] = {"stage": "finetune", "parent": NASH_SIDECAR}
    return out


def bench_json(size, dataset, variant, modes=("fixed", "natural"), scale=1.0):
    e, d = LAYERS[variant]
    results = []
    for mode in modes:
        for bs in BATCH:
            # latency grows with batch size, less for shallow decoders (a made-up but
            # monotone model); BS1 fixed is exactly MS_BS1
            ms = MS_BS1[variant] * scale * (1 + 0.5 * (bs - 1) * (7 - d) / 6)
            if mode == "natural":
                ms *= 0.8
            results.append({"mode": mode, "batch_size": bs, "mean_ms": ms, "std_ms": 1.0,
                            "median_ms": ms, "runs_ms": [ms - 1, ms + 1],
                            "new_tokens_mean": 4.0 if mode == "fixed" else 3.5})
    out = {"stage": "benchmark", "size": size, "variant": variant, "device_label": "cpu",
           "encoder_layers": e, "decoder_layers": d, "params": 1000 * (e + 2 * d),
           "results": results}
    if dataset is not None:
        out["dataset"] = dataset
    return out


def write_inputs(tmp_path, skip=()):
    files = {"eval": [], "bench": [], "arch": []}
    for size in SIZES:
        scale = 1.0 if size == "small" else 1.2
        for variant in VARIANTS:
            for dataset in DATASETS:
                if ("eval", size, dataset, variant) not in skip:
                    p = tmp_path / "eval" / size / dataset / f"{variant}.json"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps(eval_json(size, dataset, variant, scale)))
                    files["eval"].append(str(p))
                if ("bench", size, dataset, variant) not in skip:
                    p = tmp_path / "bench" / size / dataset / f"{variant}.json"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps(bench_json(size, dataset, variant, scale=scale)))
                    files["bench"].append(str(p))
            if variant.startswith("e"):
                p = tmp_path / "arch" / size / f"{variant}.json"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(json.dumps(bench_json(size, None, variant, modes=("fixed",),
                                                   scale=scale)))
                files["arch"].append(str(p))
    return files


def run_report(tmp_path, files):
    out = tmp_path / "reports" / "demo"
    argv = ["--eval", *files["eval"], "--bench", *files["bench"], "--bench-arch", *files["arch"],
            "--out-dir", str(out)]
    assert report.main(argv) == 0
    return out


def row(csv, variant):
    df = pd.read_csv(csv)
    return df[df["variant"] == variant].iloc[0]


def test_report_tables_and_figures(tmp_path):
    out = run_report(tmp_path, write_inputs(tmp_path))
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

    # Tables 8-10: speedup 100 ms / 40 ms = 2.5 at BS1; impact -10 %.
    sp = row(tables / "speed_cpu_fixed_small_cnndm.csv", "e6d3")
    assert sp["BS1 speedup"] == pytest.approx(2.5)
    assert sp["impact (%)"] == pytest.approx(-10.0)
    # BS4: e6d6 100 * (1 + 0.5 * 3 * 1/6) = 125 ms; e6d3 40 * (1 + 0.5 * 3 * 4/6) = 80 ms
    assert sp["BS4 speedup"] == pytest.approx(125 / 80)
    assert "BS1 new tokens" in pd.read_csv(tables / "speed_cpu_natural_small_cnndm.csv")
    summary = row(tables / "speedup_summary_cpu_fixed.csv", "nash-d3-uniform-l0s30")
    assert summary["base/xsum speedup BS1"] == pytest.approx(100 / 45)
    assert summary["small/cnndm R-L"] == pytest.approx(29.0)

    # architecture-only: 90 ms for e3d6 -> 100 / 90
    arch = row(tables / "arch_speed_cpu_fixed.csv", "e3d6")
    assert arch["small BS1 speedup"] == pytest.approx(100 / 90)
    assert arch["small params"] == 1000 * (3 + 12)

    md = (tables / "retention_cnndm.md").read_text()
    assert "90.00" in md and "nash-d3-uniform-l0s30" in md

    expected = ["retention_cnndm", "retention_xsum", "detail_small_cnndm", "detail_base_xsum",
                "speed_cpu_fixed_small_cnndm", "speed_cpu_natural_base_xsum",
                "speedup_summary_cpu_fixed", "speedup_summary_cpu_natural", "arch_speed_cpu_fixed"]
    for name in expected:
        for ext in ("csv", "md"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0, name
    figs = ["fig1_quality_vs_speedup_cpu_fixed", "fig1_quality_vs_speedup_cpu_natural",
            "fig3_rouge2_vs_layers_cnndm", "fig3_rouge2_vs_layers_xsum",
            "fig5_speedup_vs_batch_cpu_fixed", "fig5_arch_speedup_vs_batch_cpu_fixed"]
    for name in figs:
        png = figures / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert (figures / f"{name}.pdf").stat().st_size > 0

    side = json.loads((out / "report.json").read_text())
    assert side["stage"] == "report"
    assert "figures/fig1_quality_vs_speedup_cpu_fixed.png" in side["files"]
    # tables: 2 retention + 4 detail + 4 nash + 8 speed + 2 summary + 1 arch (csv and md);
    # figures: 2 + 2 + 2 + 1 (png and pdf)
    assert len(side["files"]) == 2 * (2 + 4 + 4 + 8 + 2 + 1) + 2 * (2 + 2 + 2 + 1)


def test_missing_eval_baseline_is_an_error(tmp_path):
    files = write_inputs(tmp_path, skip={("eval", "base", "xsum", "e6d6")})
    with pytest.raises(ValueError, match="missing baseline: no e6d6 eval for size base, "
                                         "dataset xsum"):
        run_report(tmp_path, files)
    assert not (tmp_path / "reports").exists()  # failed before writing anything


def test_missing_bench_baseline_is_an_error(tmp_path):
    files = write_inputs(tmp_path, skip={("bench", "small", "cnndm", "e6d6")})
    with pytest.raises(ValueError, match="missing baseline: no e6d6 benchmark for device cpu, "
                                         "mode fixed, size small, dataset cnndm, batch_size 1"):
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
        T.eval_frame([("x.json", obj)])


def test_paper_arithmetic():
    # Table 25 (small, QIWS): R-2 28.90 vs 29.03, 293 ms vs 524 ms
    assert T.impact(28.90, 29.03) == pytest.approx(-0.45, abs=0.005)
    assert T.retention(28.90, 29.03) == pytest.approx(99.55, abs=0.005)
    assert T.speedup(524, 293) == pytest.approx(1.79, abs=0.005)


def test_variant_order_and_groups():
    assert T.sort_variants(["nash-d3-uniform-l0s30", "e1d1", "e6d6", "nash-d2-low-l0s30",
                            "e3d6", "e6d2", "nash-d2-uniform-l0s30"]) == [
        "e6d6", "e6d2", "e3d6", "e1d1", "nash-d2-low-l0s30", "nash-d2-uniform-l0s30",
        "nash-d3-uniform-l0s30"]
    assert [T.variant_group(v) for v in ("e6d6", "e6d2", "e3d6", "e2d2", "e3d5", "nash-d2-high-none")] == [
        "baseline", "decoder", "encoder", "both", "other", "nash"]
    with pytest.raises(ValueError, match="is neither e"):
        T.variant_key("e7d6")


def test_retention_against_a_zero_baseline_is_undefined_not_a_number_made_up():
    import math

    from asymprune import tables

    assert math.isnan(tables.retention(3.0, 0.0))
    assert math.isnan(tables.impact(3.0, 0.0))
    assert tables.retention(18.0, 20.0) == 90.0


def test_nash_table_puts_reached_sparsity_next_to_the_target(tmp_path):
    out = run_report(tmp_path, write_inputs(tmp_path))
    r = row(out / "tables" / "nash_small_cnndm.csv", "nash-d3-uniform-l0s30")
    assert r["target sparsity (%)"] == pytest.approx(30.0)
    assert r["reached sparsity (%)"] == pytest.approx(30.5)
    assert r["gates' expected sparsity (%)"] == pytest.approx(31.0)
    assert r["R-2 impact (%)"] == pytest.approx(-5.0)  # 19.0 vs 20.0
    assert r["decoder blocks"] == "0 2 5"


def test_nash_eval_without_the_nash_sidecar_is_an_error(tmp_path):
    files = write_inputs(tmp_path)
    nash_file = next(f for f in files["eval"] if f.endswith("nash-d3-uniform-l0s30.json"))
    obj = json.loads(open(nash_file).read())
    del obj["model_sidecar"]
    open(nash_file, "w").write(json.dumps(obj))
    with pytest.raises(ValueError, match="without the NASH stage's sidecar"):
        run_report(tmp_path, files)
