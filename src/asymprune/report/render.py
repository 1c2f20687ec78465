"""Writing the report's files: tables as CSV, Markdown and HTML (two decimals, grouped
integers, a † after a flagged number with its footnotes below), figures as PNG and PDF.

A table is a DataFrame plus three attrs: "title" (a line above it), "marks" ({column: boolean
column}; True puts a † after that row's number: CSV keeps the boolean column, Markdown and
HTML show the † instead) and "notes" (lines below it)."""

from __future__ import annotations

import html
import math
import numbers
from pathlib import Path

import pandas as pd

from asymprune.report.tables import DAGGER


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{value:,}"  # 60,511,616 parameters read at a glance
    return str(value)


def render(df: pd.DataFrame) -> pd.DataFrame:
    """The table's cells as text: two decimals for floats, grouped integers, blank for a cell
    with no value, and a † after a number its mark column (``df.attrs["marks"]``) flags; the
    mark columns themselves are left out (the † says it)."""
    marks = df.attrs.get("marks", {})
    cells = df.astype(object).map(_cell)
    for column, flag in marks.items():
        flagged = df[flag].fillna(False).astype(bool)
        cells.loc[flagged, column] = cells.loc[flagged, column] + DAGGER
    return cells.drop(columns=list(marks.values()))


def _numeric(column: pd.Series) -> bool:
    values = column.dropna()
    return not values.empty and all(isinstance(v, numbers.Number) for v in values)


def to_markdown(df: pd.DataFrame) -> str:
    """The rendered table (first, label column left-aligned, numbers right-aligned), with its
    title above and its notes (what † means, each disturbed cell's reasons) below."""
    cells = render(df)
    # labels (the first column and any text column: variant, kind, reason) left, numbers right
    align = ["left"] + ["left" if df[c].dtype == object and not _numeric(df[c]) else "right"
                        for c in cells.columns[1:]]
    body = cells.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
    title = df.attrs.get("title")
    notes = df.attrs.get("notes", [])
    return ((f"**{title}**\n\n" if title else "") + body
            + "".join(f"\n{note}\n" for note in notes))


def to_html(df: pd.DataFrame, name: str) -> str:
    """A standalone page of the rendered table (what the Snakemake report shows inline)."""
    cells = render(df)
    title = df.attrs.get("title")
    notes = df.attrs.get("notes", [])
    parts = [f"<h3>{html.escape(title)}</h3>"] if title else []
    parts.append(cells.to_html(index=False, border=0))
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "th,td{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd} "
             "th:first-child,td:first-child{text-align:left}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(name)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_table(df: pd.DataFrame, tables_dir: Path, name: str, written: list[Path]) -> None:
    csv, md, page = (tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "html"))
    df.to_csv(csv, index=False, float_format="%.6f")
    md.write_text(to_markdown(df))
    page.write_text(to_html(df, name))
    written += [csv, md, page]


def save_figure(fig, figures_dir: Path, name: str, written: list[Path]) -> None:
    png, pdf = figures_dir / f"{name}.png", figures_dir / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    # No creation date in the PDF: the same inputs give the same bytes.
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    written += [png, pdf]


def clear_stale(folder: Path, prefixes: tuple[str, ...], suffixes: tuple[str, ...]) -> None:
    """Remove this stage's own outputs of an earlier run (only names it writes)."""
    for f in folder.glob("*"):
        if f.is_file() and f.name.startswith(prefixes) and f.suffix in suffixes:
            f.unlink()
