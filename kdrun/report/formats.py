"""Rendering a report table: rich terminal table, Markdown, CSV, JSON."""

from __future__ import annotations

import json

import pandas as pd
from rich.table import Table

FORMATS = ("table", "markdown", "csv", "json")


def rich_table(table: pd.DataFrame, title: str) -> Table:
    t = Table(title=title)
    t.add_column(table.index.name or "")
    for c in table.columns:
        t.add_column(str(c), justify="right")
    for idx, row in table.iterrows():
        t.add_row(str(idx), *map(str, row.tolist()))
    return t


def markdown(table: pd.DataFrame, title: str) -> str:
    cols = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = [f"**{title}**", "", "| " + " | ".join(cols) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx), *map(str, row.tolist())]) + " |")
    return "\n".join(lines) + "\n"


def csv(long: pd.DataFrame) -> str:
    return long.to_csv(index=False)


def to_json(long: pd.DataFrame, meta: dict) -> str:
    recs = json.loads(long.to_json(orient="records"))
    return json.dumps({**meta, "rows": recs}, indent=2) + "\n"
