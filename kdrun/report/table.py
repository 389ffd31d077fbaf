"""What every report table produces, whatever it computes: numbers and their presentation.

`long` holds the numbers (one row per cell, full precision) for CSV/JSON; `wide` holds the
formatted cells as they appear in a paper table; `score` is `wide`'s numeric twin that says
which cell is best per column (NaN: not ranked, e.g. the teacher row) for LaTeX's bold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Report:
    name: str
    title: str
    long: pd.DataFrame
    wide: pd.DataFrame
    score: pd.DataFrame | None = None
    lower_is_better: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    rules_after: list[str] = field(default_factory=list)  # row labels followed by a rule

    @property
    def empty(self) -> bool:
        return self.wide.empty


def best_cells(report: Report) -> set[tuple[Any, Any]]:
    """(row, column) of the best score in each column (all ties), for bolding."""
    out: set[tuple[Any, Any]] = set()
    if report.score is None:
        return out
    for col in report.score.columns:
        s = pd.to_numeric(report.score[col], errors="coerce").dropna()
        if s.empty:
            continue
        best = s.min() if col in report.lower_is_better else s.max()
        out.update((row, col) for row, v in s.items() if v == best)
    return out
