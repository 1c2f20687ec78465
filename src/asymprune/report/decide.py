"""Decisions: the Pareto front of R-2 vs median latency over variant x engine x precision, and
the variant and engine the report settings recommend (latency budget, quality floor)."""

from __future__ import annotations

import math

import pandas as pd

from asymprune.report.tables import (PAPER_PROTOCOL, _annotate, _baseline_row, quality_frame,
                                     retention)
from asymprune.variants import TEACHER


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """(latency, quality) pairs -> whether each is on the Pareto front: no other point is as
    fast or faster and as good or better, and strictly one of the two. Equal points are both
    on it."""
    return [not any(l2 <= lat and q2 >= q and (l2 < lat or q2 > q) for l2, q2 in points)
            for lat, q in points]


def pareto_tables(sp: pd.DataFrame, ev: pd.DataFrame, batch_size: int,
                  baseline: str = TEACHER, eng: pd.DataFrame | None = None
                  ) -> dict[tuple[str, str], pd.DataFrame]:
    """Per size x dataset: every (variant, engine) timed (paper protocol, fixed length,
    ``batch_size``) with its R-2 and median latency per device, and whether it is on the one
    front of that device over all variants, engines and precisions. A pair is on the front
    only when undisturbed and scored (``quality_frame``); the others are listed."""
    cells = sp[(sp["protocol"] == PAPER_PROTOCOL) & (sp["mode"] == "fixed")]
    at = cells[cells["batch_size"] == batch_size]
    if at.empty:
        timed = sorted(int(b) for b in cells["batch_size"].unique())
        raise ValueError(f"config key report.batch_size: no {PAPER_PROTOCOL}-protocol, "
                         f"fixed-length benchmark cell at batch size {batch_size} (timed: "
                         f"{timed or 'none; benchmark.modes needs fixed'})")
    quality = quality_frame(ev, eng).set_index(["size", "dataset", "variant", "engine"])
    out = {}
    for (size, dataset), g in at.groupby(["size", "dataset"], sort=True):
        d = ev[(ev["size"] == size) & (ev["dataset"] == dataset)]
        base_r2 = _baseline_row(d, baseline, f"eval for size {size}, dataset {dataset}")["rouge2"]
        parts = []
        for device, c in g.groupby("device", sort=True):
            keys = [(size, dataset, v, e) for v, e in zip(c["variant"], c["engine"])]
            r2 = [quality["R-2"].get(k, math.nan) for k in keys]
            eager_base = c[(c["variant"] == baseline) & (c["engine"] == "eager")]
            base_ms = eager_base["median_ms"].iloc[0] if len(eager_base) else math.nan
            t = pd.DataFrame({
                "device": device, "variant": c["variant"].to_numpy(),
                "engine": c["engine"].to_numpy(), "R-2": r2,
                "retention (%)": [retention(v, base_r2) for v in r2],
                "median ms": c["median_ms"].to_numpy(), "spread": c["spread"].to_numpy(),
                "speedup": c["speedup"].to_numpy(),
                f"speedup vs {baseline} eager": [base_ms / m for m in c["median_ms"]],
                "peak MiB": c["peak_memory_mb"].to_numpy(),
                "disturbed": c["disturbed"].to_numpy(),
                "speedup disturbed": c["speedup disturbed"].to_numpy(),
                "quality from": [quality["quality from"].get(k, "not evaluated")
                                 for k in keys]})
            ok = ~t["disturbed"] & t["R-2"].notna()
            t["on_front"] = False
            if ok.any():  # every pair disturbed or unscored: no front
                t.loc[ok, "on_front"] = pareto_front(list(zip(t.loc[ok, "median ms"],
                                                              t.loc[ok, "R-2"])))
            parts.append(t.sort_values(["median ms", "engine"], kind="stable"))
        table = pd.concat(parts, ignore_index=True)
        title = (f"Pareto front of R-2 vs median latency over variants and engines, "
                 f"{size}/{dataset} ({PAPER_PROTOCOL} protocol, fixed output length, "
                 f"batch {batch_size})")
        notes = [f"on_front: no undisturbed, scored (variant, engine) of the same device is "
                 f"both at least as fast and at least as good (R-2); retention = R-2 in % of "
                 f"{baseline}'s main evaluation; speedup = {baseline} on the same engine / "
                 f"this; speedup vs {baseline} eager = the latency a user gains over HF "
                 f"generate of the unpruned model; peak MiB = the most one timed run added to "
                 f"memory; quality from: eager and compiled give the same tokens and share the "
                 f"main evaluation, a ct2-* engine has its own (evaluate.engines) or none."]
        if any(v.startswith("nash-") for v in table["variant"]) and \
                any(e.startswith("ct2-") for e in table["engine"]):
            notes.append("ct2-* engines run NASH encoders padded back to full width with "
                         "zero weights (asymprune.ct2): same outputs, but padded heads and "
                         "FFN units keep their compute, so NASH's ct2 latency is an upper "
                         "bound of what a width-aware kernel would give.")
        out[(size, dataset)] = _annotate(
            table, title, {"median ms": "disturbed", "speedup": "speedup disturbed"}, g,
            baseline, notes)
    return out


def recommend(cells: pd.DataFrame, budget_ms: float | None, floor: float | None,
              baseline: str = TEACHER) -> tuple[str | None, str]:
    """The variant ``choose`` picks (None when none) and why."""
    row, reason = choose(cells, budget_ms, floor, baseline)
    return (None if row is None else row["variant"]), reason


def choose(cells: pd.DataFrame, budget_ms: float | None, floor: float | None,
           baseline: str = TEACHER) -> tuple[pd.Series | None, str]:
    """(row, reason) among the undisturbed, scored rows of one device of a Pareto table
    (every engine; with an ``engine`` column the variant is named "variant on engine").

    budget only: the best R-2 with median <= budget (the faster of equals); floor only: the
    fastest with retention >= floor (the better R-2 of equals); both: the fastest meeting both.
    Neither, or nothing meeting them: (None, why).
    """
    if budget_ms is None and floor is None:
        return None, ("no recommendation: neither report.latency_budget_ms nor "
                      "report.quality_floor is set")
    ok = cells[~cells["disturbed"] & cells["R-2"].notna()]
    rules, fits = [], ok
    if budget_ms is not None:
        rules.append(f"median <= {budget_ms:g} ms")
        fits = fits[fits["median ms"] <= budget_ms]
    if floor is not None:
        if ok["retention (%)"].isna().all():
            return None, (f"no recommendation: R-2 retention is undefined ({baseline}'s R-2 "
                          f"is 0), so report.quality_floor cannot be applied")
        rules.append(f"R-2 retention >= {floor:g} %")
        fits = fits[fits["retention (%)"] >= floor]
    rule = " and ".join(rules)
    what = "variant-engine pairs" if "engine" in cells else "variants"
    left_out = len(cells) - len(ok)
    among = f"{len(ok)} undisturbed {what}" + (f", {left_out} disturbed or not evaluated "
                                               f"left out" if left_out else "")
    if fits.empty:
        return None, f"no recommendation: none of {among} has {rule}"
    if floor is None:
        best = fits.sort_values(["R-2", "median ms"], ascending=[False, True]).iloc[0]
        why = f"best R-2 of the {len(fits)} with {rule} ({among})"
    else:
        best = fits.sort_values(["median ms", "R-2"], ascending=[True, False]).iloc[0]
        why = f"fastest of the {len(fits)} with {rule} ({among})"
    if "engine" in cells:
        why = (f"{best['variant']} on {best['engine']}: {best['median ms']:.0f} ms, R-2 "
               f"retention {best['retention (%)']:.0f} %; {why}")
    return best, why


def recommendation_table(paretos: dict[tuple[str, str], pd.DataFrame], budget_ms: float | None,
                         floor: float | None, batch_size: int,
                         baseline: str = TEACHER) -> pd.DataFrame:
    """One row per size, dataset and device: the recommended variant and engine over every
    variant x engine x precision timed (blank when none), its numbers and the reason."""
    rows = []
    for (size, dataset), table in paretos.items():
        for device, cells in table.groupby("device", sort=True):
            chosen, reason = choose(cells, budget_ms, floor, baseline)
            row = {"size": size, "dataset": dataset, "device": device, "variant": None,
                   "engine": None, "R-2": math.nan, "retention (%)": math.nan,
                   "median ms": math.nan, "speedup": math.nan}
            if chosen is not None:
                row.update({k: chosen[k] for k in ("variant", "engine", "R-2", "retention (%)",
                                                   "median ms", "speedup")})
            rows.append({**row, "reason": reason})
    table = pd.DataFrame(rows)
    settings_text = (f"report.latency_budget_ms = {budget_ms}, report.quality_floor = {floor}, "
                     f"report.batch_size = {batch_size}")
    table.attrs.update(title=f"Recommended variant and engine ({PAPER_PROTOCOL} protocol, "
                             f"fixed output length; {settings_text})", marks={}, notes=[])
    return table
