"""The papers' main table: methods as rows, teacher->student pairs as columns.

Each cell is `mean ± std (n)` over seeds (std with n-1), from each job's best-epoch top-1
unless another metric is asked for. A `teacher` row and the vanilla `student` row frame the
methods, as in RepDistiller's and mdistiller's tables.
"""

from __future__ import annotations

import math

import pandas as pd

METRICS = {"best": "best_top1", "last": "last_top1", "last5": "last5_top1"}
METRICS_TOP5 = {"best": "best_top5", "last": "last_top5"}


def pair_name(teacher: str | None, student: str) -> str:
    return f"{teacher}->{student}"


def cell(values: pd.Series) -> dict:
    v = values.dropna().astype(float)
    n = len(v)
    mean = v.mean() if n else math.nan
    std = v.std(ddof=1) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n}


def fmt(c: dict) -> str:
    if c["n"] == 0:
        return "-"
    std = "–" if math.isnan(c["std"]) else f"{c['std']:.2f}"
    return f"{c['mean']:.2f} ± {std} ({c['n']})"


def top1(df: pd.DataFrame, metric: str = "best", column: str | None = None) -> pd.DataFrame:
    """Long-form table: one row per (row label, pair) with mean, std, n."""
    column = column or METRICS[metric]
    done = df[df["state"] == "succeeded"]
    students = done[done["kind"] == "student"]
    pairs = (students[students["teacher"].notna()][["teacher", "student"]]
             .drop_duplicates().sort_values(["student", "teacher"]))
    out = []
    for t, s in pairs.itertuples(index=False):
        pair = pair_name(t, s)
        tjobs = done[(done["kind"] == "teacher") & (done["student"] == t)]
        tvals = tjobs[column] if len(tjobs) else (
            students[students["teacher"] == t]["teacher_top1"].drop_duplicates())
        out.append({"row": "teacher", "pair": pair, **cell(tvals)})
        alone = students[(students["method"] == "vanilla") & (students["student"] == s)]
        out.append({"row": "student", "pair": pair, **cell(alone[column])})
        mine = students[(students["teacher"] == t) & (students["student"] == s)]
        for label, grp in mine.groupby("label", sort=False):
            out.append({"row": label, "pair": pair, **cell(grp[column])})
    return pd.DataFrame(out, columns=["row", "pair", "mean", "std", "n"])


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """Rows x pairs of formatted cells, teacher and student rows first."""
    if long.empty:
        return pd.DataFrame()
    long = long.assign(text=[fmt(r) for r in long.to_dict("records")])
    table = long.pivot(index="row", columns="pair", values="text").fillna("-")
    order = ["teacher", "student"] + sorted(r for r in table.index if r not in ("teacher", "student"))
    return table.loc[[r for r in order if r in table.index], list(dict.fromkeys(long["pair"]))]
