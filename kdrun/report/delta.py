"""`delta`: each method's top-1 gain over a baseline (KD) per pair, compared seed by seed.

Jobs of one seed share initialisation and data order across methods, so the gain is the mean
of per-seed differences with a paired t 95% interval (`kdrun.report.stats.paired`); a `*`
marks an interval that excludes zero. Only seeds where both jobs finished are paired; the
others are counted in the cell by their state.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdrun.report import baseline as baseline_mod
from kdrun.report import cells, metrics
from kdrun.report import pairs as P
from kdrun.report.cells import number
from kdrun.report.stats import paired
from kdrun.report.table import Report

LONG_COLS = ["dataset", "pair", "teacher", "student", "row", "baseline", "mean", "std", "n",
             "lo", "hi", "significant", "total", *cells.PENDING, "seeds"]
LEVEL = 0.95
# A seed that is not finished on both sides counts as its least advanced side.
_RANK = {"failed": 5, "cancelled": 4, "blocked": 3, "queued": 2, "running": 1}


def _by_seed(jobs: pd.DataFrame, vals: pd.Series) -> tuple[dict[int, float], dict[int, str]]:
    done = jobs[(jobs["state"] == "succeeded") & vals.loc[jobs.index].notna()]
    values = {int(s): float(vals.loc[i]) for i, s in zip(done.index, done["seed"], strict=True)}
    states = {int(s): st for s, st in zip(jobs["seed"], jobs["state"], strict=True)}
    return values, states


def _cell(jobs: pd.DataFrame, base: pd.DataFrame, vals: pd.Series) -> dict[str, Any]:
    a, a_state = _by_seed(jobs, vals)
    b, b_state = _by_seed(base, vals)
    pr = paired(a, b, LEVEL)
    counts = {s: 0 for s in cells.PENDING}
    for seed in set(a_state) | set(b_state):
        if seed in pr.seeds:
            continue
        worst = max((a_state.get(seed, "failed"), b_state.get(seed, "failed")),
                    key=lambda st: _RANK.get(st, 0))
        if worst in counts:
            counts[worst] += 1
    return {"mean": pr.mean, "std": pr.std, "n": pr.n, "lo": pr.lo, "hi": pr.hi,
            "significant": pr.significant, "total": len(set(a_state) | set(b_state)), **counts,
            "seeds": ",".join(map(str, pr.seeds))}


def long_table(df: pd.DataFrame, metric: str = "best", epochs: pd.DataFrame | None = None,
               baseline: str = "kd") -> pd.DataFrame:
    vals = metrics.values(df, "top1", metric, epochs)
    ps = P.pairs(df)
    titles = P.columns(ps)
    out = []
    for p in ps:
        dataset, teacher, student = p
        mine = P.of_pair(df, p)
        base = mine[mine["label"] == baseline]
        if base.empty:
            continue
        rows: list[tuple[str, pd.DataFrame]] = [
            (P.student_row(label), grp)
            for label, grp in P.alone(df, dataset, student).groupby("label", sort=False)]
        rows += [(label, grp) for label, grp in mine.groupby("label", sort=False)
                 if label != baseline]
        for row, jobs in rows:
            out.append({"dataset": dataset, "pair": titles[p], "teacher": teacher,
                        "student": student, "row": row, "baseline": baseline,
                        **_cell(jobs, base, vals)})
    return pd.DataFrame(out, columns=LONG_COLS)


def cell_text(c: dict[str, Any]) -> str:
    """`+1.23 [+0.45, +2.01] (3) *`."""
    if c["n"] == 0:
        return f"– ({cells.pending_text(c)})"
    ci = "[–]" if math.isnan(c["lo"]) else (
        f"[{number(c['lo'], sign=True)}, {number(c['hi'], sign=True)}]")
    star = " *" if c["significant"] else ""
    return f"{number(c['mean'], sign=True)} {ci} ({cells.pending_text(c)}){star}"


def build(df: pd.DataFrame, metric: str = "best", epochs: pd.DataFrame | None = None,
          baseline: str = "kd") -> Report:
    if P.distilled(df).shape[0]:  # `kd(T=4)` matches kd(T=4.0); a swept kd needs picking
        baseline = baseline_mod.resolve(df, baseline)
    long = long_table(df, metric, epochs, baseline)
    title = (f"top1 gain over {baseline} (points), {metrics.DESCRIBE[metric]}: mean of "
             f"per-seed differences [{LEVEL:.0%} CI] (seeds paired)")
    notes = ["paired over matching seeds; CI from Student's t with n-1 degrees of freedom; "
             "* = the interval excludes 0",
             metrics.selection_note(df[(df["state"] == "succeeded") & (df["kind"] == "student")],
                                    metric)]
    meta = {"metric": metric, "baseline": baseline, "level": LEVEL}
    if long.empty:
        return Report("delta", title, long, pd.DataFrame(), notes=notes, meta=meta)
    pair_cols = list(dict.fromkeys(long["pair"]))
    rows = list(dict.fromkeys(long["row"]))
    order = sorted(r for r in rows if r.startswith(P.STUDENT_ROW)) + P.order(
        [r for r in rows if not r.startswith(P.STUDENT_ROW)])
    text = long.assign(text=[cell_text(r) for r in long.to_dict("records")])
    wide = text.pivot(index="row", columns="pair", values="text").reindex(
        index=order, columns=pair_cols).fillna("-")
    wide.index.name = "method"
    score = long.pivot(index="row", columns="pair", values="mean").reindex(
        index=order, columns=pair_cols)
    score.loc[[r for r in order if r.startswith(P.STUDENT_ROW)]] = math.nan
    incomplete = long[long["n"] < long["total"]]
    if len(incomplete):
        notes.append(f"{len(incomplete)} cell(s) incomplete: (paired/total seeds: states)")
    missing = [t for p, t in P.columns(P.pairs(df)).items() if t not in pair_cols]
    if missing:
        notes.append(f"no {baseline} jobs for {', '.join(missing)}: left out")
    framing = [r for r in order if r.startswith(P.STUDENT_ROW)]
    rules = [framing[-1]] if framing and len(framing) < len(order) else []
    return Report("delta", title, long, wide, score=score, notes=notes, meta=meta,
                  rules_after=rules)
