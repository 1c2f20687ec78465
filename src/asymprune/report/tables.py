"""Table math of the report: frames (``report.read``) -> tables. No plotting, no file writing.

Quality tables, the math they share, and the disturbed judgement; speed tables are in
``report.speed``, the Pareto front and the recommendation in ``report.decide``.

Definitions (as in Campos & Zhai):
  retention R  = 100 * R-2(variant) / R-2(baseline)                  (Tables 5-7)
  impact       = 100 * (metric(variant) / metric(baseline) - 1)      (Tables 8-10, 16-24)
  speedup      = median latency(baseline) / median latency(variant)   (same device, protocol,
                                                                     mode, engine, batch size)
e.g. R-2 28.90 vs 29.03: R = 99.55 %, impact = -0.45 %; 524 ms vs 293 ms: speedup 1.79.
The paper divides means; we divide medians (see _with_speedups). A benchmark cell ``judge``
finds disturbed (report.max_spread, report.max_foreign_load; docs/benchmark.md) is marked
wherever it is shown, and so is every speedup divided by it.

The baseline is the unpruned teacher (``e6d6``) of the same size and dataset; a table that
needs it and does not find it raises, naming what is missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import pandas as pd

from asymprune import variants
from asymprune.report.order import sixths, sort_engines, sort_sizes, sort_variants, variant_key
from asymprune.report.read import METRICS, Record, model_record
from asymprune.variants import TEACHER

# A speedup divides two cells of the same key (one inputs kind per protocol, see bench_frame).
SPEED_KEY = ["device", "protocol", "mode", "engine", "size", "dataset", "batch_size"]
PAPER_PROTOCOL = "paper"  # Campos & Zhai's protocol; "nash" is NASH's (beam 4, batch 32)
# Engines that give the eager engine's tokens by construction (asymprune.compiled_engine's
# step; tests/test_engine*.py check it): a main evaluation with one of them scores both.
TOKEN_IDENTICAL = ("eager", "compiled")
DAGGER = "†"  # the mark of a disturbed cell in Markdown / HTML tables

log = logging.getLogger("asymprune.report")


# ----------------------------------------------------------------------------- disturbed

def disturbed_why(spread: float, foreign_load: float | None, max_spread: float,
                  max_foreign_load: float) -> list[str]:
    """Why a benchmark cell counts as disturbed (empty: it does not), docs/benchmark.md: its
    runs' spread exceeds ``max_spread``, or other processes used more than
    ``max_foreign_load`` of its CPUs meanwhile (unknown load: not judged). E.g. spread 1.90 with
    max 0.25 -> ["spread 1.90 > 0.25"]."""
    why = []
    if spread > max_spread:
        why.append(f"spread {spread:.2f} > {max_spread}")
    if foreign_load is not None and not math.isnan(foreign_load) \
            and foreign_load > max_foreign_load:
        why.append(f"foreign load {foreign_load:.2f} > {max_foreign_load}")
    return why


def judge(bench: pd.DataFrame, max_spread: float, max_foreign_load: float) -> pd.DataFrame:
    """``bench`` (``read.bench_frame``) with ``disturbed`` and its reasons, joined, in ``why``:
    the report's judgement of the benchmark's raw runs (settings report.max_spread,
    report.max_foreign_load)."""
    bench = bench.copy()
    whys = [disturbed_why(s, f, max_spread, max_foreign_load)
            for s, f in zip(bench["spread"], bench["foreign_load"])]
    bench["disturbed"] = [bool(w) for w in whys]
    bench["why"] = ["; ".join(w) for w in whys]
    return bench


# ----------------------------------------------------------------------------- quality

def quality_frame(ev: pd.DataFrame, eng: pd.DataFrame | None) -> pd.DataFrame:
    """R-2 of every (size, dataset, variant, engine) that was scored, and where it comes from:
    the engine's own evaluation, or the main evaluation for the engines that give its tokens
    (``TOKEN_IDENTICAL``, when the main evaluation used one of them)."""
    rows = []
    for r in ev.to_dict("records"):
        same = TOKEN_IDENTICAL if r["engine"] in TOKEN_IDENTICAL else (r["engine"],)
        rows += [{"size": r["size"], "dataset": r["dataset"], "variant": r["variant"],
                  "engine": e, "R-2": r["rouge2"],
                  "quality from": f"{r['engine']} evaluation"} for e in same]
    if eng is not None:
        rows += [{"size": r["size"], "dataset": r["dataset"], "variant": r["variant"],
                  "engine": r["engine"], "R-2": r["rouge2"],
                  "quality from": f"{r['engine']} evaluation"} for r in eng.to_dict("records")]
    q = pd.DataFrame(rows, columns=["size", "dataset", "variant", "engine", "R-2",
                                    "quality from"])
    dup = q.duplicated(["size", "dataset", "variant", "engine"])
    if dup.any():
        r = q[dup].iloc[0]
        raise ValueError(f"{r['engine']} of {r['size']}/{r['dataset']}/{r['variant']} is scored "
                         f"twice (the main evaluation's engine is also in evaluate.engines)")
    return q


def precision_tables(ev: pd.DataFrame, eng: pd.DataFrame,
                     baseline: str = TEACHER) -> dict[tuple[str, str], pd.DataFrame]:
    """Per size x dataset: each variant's R-2 and retention with the main evaluation (float32
    or the configured dtype) next to each further engine's (e.g. ct2-int8), the generation
    length, and the share of documents each engine predicts exactly as the main one."""
    out = {}
    for (size, dataset), d in ev.groupby(["size", "dataset"], sort=True):
        base_r2 = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")["rouge2"]
        d = _order(d)
        main = d["engine"].iloc[0]
        table = pd.DataFrame({"variant": d["variant"].to_numpy(),
                              f"R-2 {main}": d["rouge2"].to_numpy(),
                              f"retention {main} (%)": [retention(v, base_r2)
                                                        for v in d["rouge2"]],
                              f"GenL {main}": d["gen_len"].to_numpy()})
        e = eng[(eng["size"] == size) & (eng["dataset"] == dataset)]
        if e.empty:
            continue
        for engine in sort_engines(e["engine"]):
            at = e[e["engine"] == engine].set_index("variant")
            table[f"R-2 {engine}"] = table["variant"].map(at["rouge2"])
            # retention against the baseline's main evaluation: what the deployed engine keeps
            # of the unpruned model as evaluated (e.g. e6d6 on int8 may itself lose some)
            table[f"retention {engine} (%)"] = [retention(v, base_r2)
                                                for v in table[f"R-2 {engine}"]]
            table[f"GenL {engine}"] = table["variant"].map(at["gen_len"])
            table[f"same as {main} (%)"
                  if len(set(e["engine"])) == 1 else
                  f"{engine} same as {main} (%)"] = 100 * table["variant"].map(
                at["identical_share"])
        table.attrs.update(
            title=f"Quality per engine and precision, {size}/{dataset} (retention = R-2 in % "
                  f"of {baseline}'s R-2 under {main})", marks={},
            notes=[f"same as {main}: share of documents whose summary is character for "
                   f"character the {main} evaluation's."])
        out[(size, dataset)] = table
    return out


KIND_LABELS = {"nash": "NASH", "kd": "equal budget, distilled (kd)",
               "ce": "equal budget, cross-entropy (ce)", "depth": "re-fine-tuned"}


def _pct(x: float | None) -> float:
    return math.nan if x is None else 100 * x


def nash_tables(eval_records: list[Record], ev: pd.DataFrame,
                baseline: str = TEACHER) -> dict[tuple[str, str], pd.DataFrame]:
    """NASH per size x dataset, compared at equal budget, from the evaluate stage's typed
    records (``asymprune.records``).

    For each decoder depth (in blocks) that a NASH variant has: the NASH variants, then the
    equal-budget baselines of that decoder depth (e{E}d{D}-kd / -ce: the NASH stage's steps
    without gates, then the same final fine-tune), then the re-fine-tuned depth variants of
    that depth (their own, smaller budget). Columns: the NASH stage's sparsities (the gates'
    own expected sparsity, the rounded per-layer masks before the global adjustment, how many
    units the adjustment moved, the reached sparsity of the pruned encoder), the budget after
    the teacher (optimizer steps and examples) and R-2. A NASH run whose gates ended further
    from the target than its tolerance is marked †.
    """
    rows, teacher_encoder = [], {}
    for path, obj in eval_records:
        variant = obj.get("variant", "")
        group = variants.group(variant, baseline)
        rec = model_record(path, obj)
        if group == "baseline":
            teacher_encoder[obj["size"], obj["dataset"]] = rec.encoder_layers
            continue
        if group == "nash" and (rec.nash is None or rec.nash.variant != variant):
            raise ValueError(f"{path}: NASH variant {variant} without the NASH stage's facts "
                             f"for it in its record (record.nash)")
        kind = ("nash" if group == "nash" else variants.parse(variant).objective
                if group == "budget" else "depth")
        facts = rec.nash if kind == "nash" else None
        rows.append({
            "size": obj["size"], "dataset": obj["dataset"], "variant": variant,
            "kind": KIND_LABELS[kind],
            # NASH's paper protocol or its released code's (-rel ids, docs/nash.md); the
            # baselines train as the paper protocol's NASH rows
            "protocol": facts.protocol if facts else ("paper" if kind in ("kd", "ce") else ""),
            "decoder blocks": rec.decoder_layers,
            "encoder blocks": rec.encoder_layers,
            "target (%)": _pct(facts.target_sparsity) if facts else math.nan,
            "gates' expected (%)": _pct(facts.gates_expected_sparsity) if facts else math.nan,
            "gates missed target": bool(facts and facts.gates_missed_target),
            "masks before adjustment (%)": (_pct(facts.mask_sparsity_before_adjustment)
                                            if facts else math.nan),
            "units moved": (facts.units_removed + facts.units_restored
                            if facts and facts.units_removed is not None else pd.NA),
            "reached (%)": _pct(facts.reached_sparsity) if facts else math.nan,
            "steps": rec.steps, "examples": rec.examples,
        })
    out = {}
    frame = pd.DataFrame(rows)
    for (size, dataset), g in frame.groupby(["size", "dataset"], sort=True) if rows else []:
        depths = sorted(set(g.loc[g["kind"] == KIND_LABELS["nash"], "decoder blocks"]))
        if not depths:
            continue
        # re-fine-tuned depth variants: those with the teacher's whole encoder (NASH keeps
        # every encoder block) and those that have an equal-budget twin here
        twins = {v.rsplit("-", 1)[0] for v in g.loc[g["kind"].isin(
            [KIND_LABELS["kd"], KIND_LABELS["ce"]]), "variant"]}
        full = teacher_encoder.get((size, dataset))
        refined = g["kind"] == KIND_LABELS["depth"]
        g = g[~refined | g["variant"].isin(twins) | (g["encoder blocks"] == full)]
        d = ev[(ev["size"] == size) & (ev["dataset"] == dataset)]
        base = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")
        r2 = d.set_index("variant")["rouge2"]
        kinds = list(KIND_LABELS.values())
        parts = [_order(g[g["decoder blocks"] == k]).sort_values(
                     "kind", key=lambda c: c.map(kinds.index), kind="stable") for k in depths]
        table = pd.concat(parts).drop(columns=["size", "dataset"]).reset_index(drop=True)
        table["units moved"] = table["units moved"].astype("Int64")
        table["R-2"] = table["variant"].map(r2).to_numpy()
        table["R-2 impact (%)"] = [impact(v, base["rouge2"]) for v in table["R-2"]]
        missed = table[table["gates missed target"]]
        notes = [f"Budget = training after the teacher {baseline}: optimizer steps and examples "
                 f"(steps x effective batch), summed over the NASH stage and the fine-tune "
                 f"after it (or the one re-fine-tune). Equal-budget baselines keep the depth "
                 f"variant's blocks and train exactly as the NASH rows of their decoder depth, "
                 f"without gates. Sparsities are of the teacher's encoder prunable parameters; "
                 f"masks before adjustment = each layer keeping its gates' expected number of "
                 f"units, before units are moved to bring the total within the tolerance."]
        if not missed.empty:
            notes.append(f"{DAGGER} the gates' own expected sparsity ended further from the "
                         f"target than nash.train.gate_miss_tolerance: "
                         f"{', '.join(missed['variant'])}; its reached sparsity is met by the "
                         f"adjustment, not by training (train longer or raise the multipliers' "
                         f"learning rate)")
        table.attrs.update(
            title=f"NASH at equal budget, {size}/{dataset}: sparsities, budget, R-2",
            marks={"gates' expected (%)": "gates missed target"}, notes=notes)
        out[(size, dataset)] = table
    return out


# ----------------------------------------------------------------------------- math

def retention(value: float, base: float) -> float:
    """100 * value / base, in percent of the baseline (29.03 of 29.03 -> 100.0).

    A baseline of 0 (an untrained teacher, e.g. the micro test preset) leaves the ratio
    undefined: NaN, printed as nan in the tables and logged, never a made-up 0 or 100.
    """
    if base == 0:
        log.warning("baseline metric is 0: retention/impact undefined (nan)")
        return math.nan
    return 100.0 * value / base


def impact(value: float, base: float) -> float:
    """Percent change vs the baseline: 100 * (value / base - 1) (28.90 vs 29.03 -> -0.45)."""
    return retention(value, base) - 100.0


def speedup(base_ms: float, variant_ms: float) -> float:
    """How many times faster than the baseline: 524 ms / 293 ms -> 1.79."""
    if variant_ms <= 0:
        raise ValueError(f"latency must be positive, got {variant_ms}")
    return base_ms / variant_ms


def _baseline_row(frame: pd.DataFrame, baseline: str, what: str) -> pd.Series:
    rows = frame[frame["variant"] == baseline]
    if rows.empty:
        raise ValueError(f"missing baseline: no {baseline} {what}")
    return rows.iloc[0]


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("variant", key=lambda s: s.map(variant_key), kind="stable")


# ----------------------------------------------------------------------------- tables

def retention_tables(ev: pd.DataFrame, baseline: str = TEACHER) -> dict[str, pd.DataFrame]:
    """Tables 5-7: per dataset, R-2 and retention R per size; rows are variants."""
    out = {}
    for dataset, d in ev.groupby("dataset", sort=True):
        table = pd.DataFrame({"variant": sort_variants(d["variant"])})
        table["lenc"] = pd.array([sixths(v)[0] for v in table["variant"]], dtype="Int64")
        table["ldec"] = pd.array([sixths(v)[1] for v in table["variant"]], dtype="Int64")
        for size in sort_sizes(d["size"]):
            ds = d[d["size"] == size].set_index("variant")
            base = _baseline_row(ds.reset_index(), baseline,
                                 f"eval for size {size}, dataset {dataset}")["rouge2"]
            r2 = table["variant"].map(ds["rouge2"])
            table[f"{size} R-2"] = r2
            table[f"{size} R (%)"] = [retention(v, base) if pd.notna(v) else math.nan for v in r2]
        out[dataset] = table
    return out


def detail_tables(ev: pd.DataFrame, baseline: str = TEACHER,
                  layers: pd.DataFrame | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """Tables 16-24: per size x dataset, every metric and its impact (% change vs baseline).

    ``layers`` (size, dataset, variant, encoder_layers, decoder_layers), from the benchmark
    sidecars, adds the absolute layer counts the paper's appendix tables show.
    """
    out = {}
    for (size, dataset), d in ev.groupby(["size", "dataset"], sort=True):
        base = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")
        d = _order(d)
        table = d[["variant", "lenc", "ldec"]].reset_index(drop=True)
        if layers is not None and not layers.empty:
            lay = layers[(layers["size"] == size) & (layers["dataset"] == dataset)]
            lay = lay.drop_duplicates("variant").set_index("variant")
            table["enc layers"] = table["variant"].map(lay["encoder_layers"]).astype("Int64")
            table["dec layers"] = table["variant"].map(lay["decoder_layers"]).astype("Int64")
        for m, label in METRICS.items():
            table[label] = d[m].to_numpy()
            table[f"{label} impact (%)"] = [impact(v, base[m]) for v in d[m]]
            if m == "rouge2":
                table["R-2 95% CI low"] = d["rouge2_lo"].to_numpy()
                table["R-2 95% CI high"] = d["rouge2_hi"].to_numpy()
        table.attrs.update(title=f"Quality of every variant, {size}/{dataset}", marks={},
                           notes=["R-2 95% CI: percentile bootstrap of the mean over the test "
                                  "documents (1,000 seeded resamples): two variants whose "
                                  "intervals overlap widely may differ by the sample alone."])
        out[(size, dataset)] = table
    return out


def _with_speedups(bench: pd.DataFrame, baseline: str, keys: list[str]) -> pd.DataFrame:
    """Adds ``speedup`` = baseline median / variant median within the same ``keys``, and
    ``speedup disturbed``: the cell or the baseline cell it divides by is disturbed.

    Medians, not means: one timed run slowed by a background job moves the mean of 7 runs by
    1/7 of its excess but leaves the median where the other runs are.
    """
    parts = []
    for key, g in bench.groupby(keys, sort=False, dropna=False):
        what = "benchmark for " + ", ".join(f"{k} {v}" for k, v in zip(keys, key))
        base = _baseline_row(g, baseline, what)
        g = g.copy()
        g["speedup"] = [speedup(base["median_ms"], v) for v in g["median_ms"]]
        g["speedup disturbed"] = g["disturbed"] | bool(base["disturbed"])
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def speed_frame(ev: pd.DataFrame, bench: pd.DataFrame, baseline: str = TEACHER) -> pd.DataFrame:
    """Long frame: every benchmark cell with its speedup and its variant's R-2 / R-L impact."""
    sp = _with_speedups(bench, baseline, SPEED_KEY)
    evi = ev.set_index(["size", "dataset", "variant"])
    r2, r2_impact, rl = [], [], []
    for size, dataset, variant in sp[["size", "dataset", "variant"]].itertuples(index=False):
        if (size, dataset, variant) not in evi.index:
            raise ValueError(f"no eval for size {size}, dataset {dataset}, variant {variant} "
                             f"(needed for the impact column of its benchmark)")
        if (size, dataset, baseline) not in evi.index:
            raise ValueError(f"missing baseline: no {baseline} eval for size {size}, "
                             f"dataset {dataset}")
        row, base = evi.loc[(size, dataset, variant)], evi.loc[(size, dataset, baseline)]
        r2.append(row["rouge2"])
        rl.append(row["rougeL"])
        r2_impact.append(impact(row["rouge2"], base["rouge2"]))
    sp["R-2"], sp["impact (%)"], sp["R-L"] = r2, r2_impact, rl
    return sp


def arch_frame(arch: pd.DataFrame, baseline: str = TEACHER) -> pd.DataFrame:
    return _with_speedups(arch, baseline, [k for k in SPEED_KEY if k != "dataset"])


# ----------------------------------------------------------------------------- disturbed cells
#
# A table is a DataFrame plus three attrs the writer renders: "title" (a line above it),
# "marks" ({column: boolean column}; True puts a † after that row's number: CSV keeps the
# boolean column, Markdown and HTML show the † instead) and "notes" (lines below it).

def _annotate(table: pd.DataFrame, title: str, marks: dict[str, str], cells: pd.DataFrame,
              baseline: str, notes: Iterable[str] = ()) -> pd.DataFrame:
    table.attrs.update(title=title, marks=marks,
                       notes=[*notes, *disturbed_notes(cells, baseline)])
    return table


def disturbed_notes(cells: pd.DataFrame, baseline: str = TEACHER) -> list[str]:
    """Footnote lines for the disturbed cells among ``cells`` (those a table is made of): what
    the † means, then one line per disturbed cell with the benchmark's reasons."""
    bad = _order(cells[cells["disturbed"]].sort_values("batch_size", kind="stable"))
    if bad.empty:
        return []
    lines = [f"{DAGGER} disturbed: the benchmark flagged the cell (its timed runs spread too "
             f"wide, or other processes used the CPU meanwhile); its speedup is marked too, and "
             f"so is every speedup divided by a disturbed {baseline} cell. Figures leave these "
             f"cells out; disturbed_benchmarks.txt lists the files to rerun."]
    for r in bad.to_dict("records"):
        where = r["size"] if pd.isna(r["dataset"]) else f"{r['size']}/{r['dataset']}"
        lines.append(f"{DAGGER} {r['variant']} {where}, {r['protocol']} protocol, {r['mode']} "
                     f"length, {r['engine']}, BS{r['batch_size']}: {r['why']}")
    return lines


def protocol_label(protocol: str, cells: pd.DataFrame) -> str:
    """"NASH protocol: beam 4, batch 32" or "paper protocol: greedy, batch 1/8/16", read from
    the cells' own num_beams and batch sizes."""
    beams = sorted(int(b) for b in cells["num_beams"].unique())
    decoding = "greedy" if beams == [1] else "beam " + "/".join(map(str, beams))
    batches = "/".join(str(int(b)) for b in sorted(cells["batch_size"].unique()))
    name = "NASH protocol" if protocol == "nash" else f"{protocol} protocol"
    return f"{name}: {decoding}, batch {batches}"


def _title(what: str, cells: pd.DataFrame, protocol: str, mode: str, device: str,
           engine: str | None = None, where: str | None = None) -> str:
    parts = [protocol_label(protocol, cells), f"{mode} output length"]
    if engine is not None:
        parts.append(f"{engine} engine")
    parts.append(f"inputs {'/'.join(sorted(cells['inputs'].unique()))}")
    parts.append(device if where is None else f"{device}, {where}")
    return f"{what} ({'; '.join(parts)})"


def _put(table: pd.DataFrame, marks: dict[str, str], label: str, values: pd.Series,
         flags: pd.Series | None = None) -> None:
    """Column ``label`` = ``values`` (indexed by variant); with ``flags`` also the boolean
    column ``<label> disturbed`` that marks it (empty where the variant has no cell)."""
    table[label] = table["variant"].map(values)
    if flags is not None:
        table[f"{label} disturbed"] = table["variant"].map(flags).astype("boolean")
        marks[label] = f"{label} disturbed"


def _variant_rows(g: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return _order(g.drop_duplicates("variant"))[columns].reset_index(drop=True)
