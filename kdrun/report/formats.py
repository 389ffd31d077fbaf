"""Rendering a report: rich terminal table, Markdown, CSV, LaTeX, JSON.

Terminal, Markdown and LaTeX show the formatted table with its title and notes; CSV and JSON
carry the long form with full-precision numbers, for scripts (CSV parses back to the same
numbers the table was built from).
"""

from __future__ import annotations

import io
import json
import math

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from kdrun.report import fit
from kdrun.report.latex import latex
from kdrun.report.table import Report


def rich_table(report: Report) -> Group:
    t = Table(title=report.title)
    t.add_column(report.wide.index.name or "")
    for c in report.wide.columns:
        t.add_column(str(c), justify="right")
    rules = set(report.rules_after)
    for idx, row in report.wide.iterrows():
        t.add_row(str(idx), *map(str, row.tolist()), end_section=idx in rules)
    return Group(t, *[Text(f"  {n}", style="dim") for n in report.notes])


def text(report: Report, width: int = 240, transpose: bool = False, split: str = "auto") -> str:
    """The terminal table as plain text (for `--out` with the default format), split into
    tables of at most `width` columns (kdrun.report.fit)."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(fit.tables(report, width, transpose, split))
    return console.export_text()


def markdown(report: Report) -> str:
    wide = report.wide
    if wide.empty:
        return "\n".join([f"**{report.title}**", "", "(nothing to show yet)", "",
                          *[f"- {_md(n)}" for n in report.notes]]) + "\n"
    cols = [wide.index.name or ""] + [str(c) for c in wide.columns]
    lines = [f"**{report.title}**", "", "| " + " | ".join(_md(c) for c in cols) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(wide.columns)) + "|"]
    for idx, row in wide.iterrows():
        lines.append("| " + " | ".join(_md(str(x)) for x in [idx, *row.tolist()]) + " |")
    if report.notes:
        lines.append("")
        lines += [f"- {_md(n)}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def csv(report: Report) -> str:
    buf = io.StringIO()
    report.long.to_csv(buf, index=False)  # shortest round-trip repr: 0.05, not 0.050000000000000003
    return buf.getvalue()


def to_json(report: Report) -> str:
    recs = [{k: _jsonable(v) for k, v in r.items()} for r in report.long.to_dict("records")]
    doc = {"table": report.name, "title": report.title, **report.meta, "notes": report.notes,
           "rows": recs}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _jsonable(v: object) -> object:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _jsonable(v.item())
    return v


def render(report: Report, fmt: str) -> str:
    """Every format but the rich terminal table, as text."""
    if fmt == "table":
        return text(report)
    if fmt == "markdown":
        return markdown(report)
    if fmt == "csv":
        return csv(report)
    if fmt == "latex":
        return latex(report)
    if fmt == "json":
        return to_json(report)
    raise ValueError(f"unknown format {fmt!r}")

