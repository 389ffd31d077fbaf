"""One report cell: the statistic over finished seeds plus how many seeds are not finished.

A cell never averages fewer seeds silently: when some of its jobs are queued, running, failed
or cancelled, its text says so (`71.20 ± 0.30 (2/3: 1 running)`), and the long form carries
the counts for scripts.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdrun.report.stats import mean_std

# "blocked": queued, but its teacher's job failed or was cancelled, so it never runs as is.
PENDING = ("queued", "blocked", "running", "failed", "cancelled")


def with_blocked(df: pd.DataFrame) -> pd.Series:
    """Job states with `blocked` for queued jobs whose teacher's job failed or was cancelled."""
    gone = set(df.loc[df["state"].isin(("failed", "cancelled")), "hash"])
    dead = df["teacher_job"].isin(gone) & (df["state"] == "queued")  # vectorised: 100k jobs
    return df["state"].where(~dead, "blocked")


def states(jobs: pd.DataFrame) -> dict[str, int]:
    """Job counts of a cell: total, and each unfinished state."""
    counts = jobs["state"].value_counts()
    return {"total": int(len(jobs)), **{s: int(counts.get(s, 0)) for s in PENDING}}


def summarize(jobs: pd.DataFrame, values: pd.Series) -> dict[str, Any]:
    """mean, std (n-1), n over the succeeded jobs' values, plus the cell's state counts."""
    done = values[jobs["state"] == "succeeded"].dropna()
    mean, std, n = mean_std(done.astype(float))
    return {"mean": mean, "std": std, "n": n, **states(jobs)}


def pending_text(c: dict[str, Any]) -> str:
    """`2/3: 1 running, 0 ...` for an incomplete cell, `3` for a complete one."""
    n, total = c["n"], c.get("total", c["n"])
    others = [f"{c[s]} {s}" for s in PENDING if c.get(s)]
    missing = total - n - sum(c.get(s, 0) for s in PENDING)
    if missing > 0:  # succeeded without this metric (e.g. no epoch metrics stored)
        others.append(f"{missing} without value")
    if n == total and not others:
        return str(n)
    return f"{n}/{total}" + (f": {', '.join(others)}" if others else "")


def number(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def text(c: dict[str, Any], digits: int = 2) -> str:
    """`mean ± std (n)`, with the incomplete-cell label in the parentheses."""
    if c.get("total", 0) == 0 and c["n"] == 0:
        return "-"
    count = pending_text(c)
    if c["n"] == 0:
        return f"– ({count})"
    return f"{number(c['mean'], digits)} ± {number(c['std'], digits)} ({count})"


def complete(c: dict[str, Any]) -> bool:
    return c["n"] == c.get("total", c["n"])


def incomplete_note(long: pd.DataFrame) -> list[str]:
    """The footnote a table with unfinished cells carries (none when every cell is done)."""
    if (long["n"] < long["total"]).any():
        return ["incomplete cells: (done/total: states); means over the finished seeds"]
    return []
