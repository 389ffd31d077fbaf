"""`top1` / `top5`: the papers' main table, methods as rows and teacher->student pairs as columns.

Each cell is `mean ± std (n)` over seeds (std with n-1) of the chosen metric. A `teacher` row
and the `student` row (trained alone) frame the methods, as in RepDistiller's and
mdistiller's tables; `(paper)` rows give the published number and our difference to it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdrun.report import cells, metrics, switches
from kdrun.report import pairs as P
from kdrun.report import paper as paper_mod
from kdrun.report.table import Report

LONG_COLS = ["dataset", "pair", "teacher", "student", "row", "mean", "std", "n", "total",
             *cells.PENDING, "selection_split", "paper", "paper_std", "paper_source",
             "paper_diff", "paper_settings"]


def _splits(jobs: pd.DataFrame) -> str:
    done = jobs[jobs["state"] == "succeeded"]
    return ",".join(sorted(set(done["selection_split"].dropna())))


def _teacher_cell(df: pd.DataFrame, mine: pd.DataFrame, vals: pd.Series) -> dict[str, Any]:
    tjobs = P.teacher_jobs(df, mine)
    if len(tjobs):
        return {**cells.summarize(tjobs, vals.loc[tjobs.index]), "splits": _splits(tjobs)}
    # A checkpoint teacher: no job; its accuracy as the students' final evaluation measured it.
    top1 = P.teacher_top1(df, mine)
    n = 0 if math.isnan(top1) else 1
    return {"mean": top1, "std": math.nan, "n": n, "total": 1,
            **{s: 0 for s in cells.PENDING}, "splits": ""}


def long_table(df: pd.DataFrame, acc: str = "top1", metric: str = "best",
               epochs: pd.DataFrame | None = None, paper: bool = True) -> pd.DataFrame:
    """One row per (pair, row) with mean, std, n, state counts and the published number."""
    vals = metrics.values(df, acc, metric, epochs)
    ps = P.pairs(df)
    titles = P.columns(ps)
    out = []
    for p in ps:
        dataset, teacher, student = p
        mine = P.of_pair(df, p)
        arch = mine["teacher_arch"].dropna().iloc[0] if mine["teacher_arch"].notna().any() else None
        found: list[tuple[str, dict[str, Any]]] = [(P.TEACHER_ROW, _teacher_cell(df, mine, vals))]
        alone = P.alone(df, dataset, student)
        for label, grp in alone.groupby("label", sort=False):
            found.append((P.student_row(label), {**cells.summarize(grp, vals.loc[grp.index]),
                                                 "splits": _splits(grp)}))
        params = {}  # a method row's hyperparameters: the (paper) row needs the same settings
        for label, grp in mine.groupby("label", sort=False):
            found.append((label, {**cells.summarize(grp, vals.loc[grp.index]),
                                  "splits": _splits(grp)}))
            params[label] = grp["params"].iloc[0]
        for row, c in found:
            pub = (paper_mod.lookup(dataset, row, arch, student, params.get(row))
                   if paper and acc == "top1" else None)
            if row == P.TEACHER_ROW and paper and acc == "top1":
                pub = paper_mod.teacher_weights(mine) or pub
            out.append({"dataset": dataset, "pair": titles[p], "teacher": teacher,
                        "student": student, "row": row, **{k: c[k] for k in
                                                           ("mean", "std", "n", "total")},
                        **{s: c[s] for s in cells.PENDING}, "selection_split": c["splits"],
                        **paper_mod.columns(pub, c["mean"])})
    return pd.DataFrame(out, columns=LONG_COLS)


def _row_order(long: pd.DataFrame) -> list[str]:
    rows = list(dict.fromkeys(long["row"]))
    framing = [r for r in rows if r == P.TEACHER_ROW] + sorted(
        r for r in rows if r.startswith(P.STUDENT_ROW))
    return framing + P.order([r for r in rows if r not in framing])


def build(df: pd.DataFrame, acc: str = "top1", metric: str = "best",
          epochs: pd.DataFrame | None = None, show_split: bool = False,
          paper: bool = True) -> Report:
    long = long_table(df, acc, metric, epochs, paper)
    title = f"{acc} (%), {metrics.DESCRIBE[metric]}, mean ± std over seeds (n)"
    done = df[(df["state"] == "succeeded") & (df["kind"] == "student")]
    notes = [metrics.selection_note(done, metric)]
    if long.empty:
        return Report(acc, title, long, pd.DataFrame(), notes=notes,
                      meta={"metric": metric, "acc": acc})
    pair_cols = list(dict.fromkeys(long["pair"]))
    text: dict[str, dict[str, str]] = {}
    score: dict[str, dict[str, float]] = {}
    framing: list[str] = []
    for row in _row_order(long):
        recs = long[long["row"] == row].to_dict("records")
        text[row] = {r["pair"]: _cell_text(r, show_split, metric) for r in recs}
        is_method = row != P.TEACHER_ROW and not row.startswith(P.STUDENT_ROW)
        score[row] = {r["pair"]: r["mean"] if is_method and r["n"] else math.nan for r in recs}
        if not is_method:
            framing.append(row)
        if any(not math.isnan(r["paper"]) for r in recs):
            prow = row + paper_mod.SUFFIX
            text[prow] = {r["pair"]: paper_mod.text(r) for r in recs}
            score[prow] = {}
            if not is_method:
                framing.append(prow)
    order = list(text)
    wide = pd.DataFrame.from_dict(text, orient="index").reindex(index=order, columns=pair_cols)
    wide = wide.fillna("-")
    wide.index.name = "method"
    scores = pd.DataFrame.from_dict(score, orient="index").reindex(index=order, columns=pair_cols)
    incomplete = long[long["n"] < long["total"]]
    if len(incomplete):
        notes.append(f"{len(incomplete)} cell(s) incomplete: (done/total: states) counts the "
                     "seeds not finished; their mean is over the finished seeds only")
    if show_split:
        notes.append("[test] / [val]: the split that selected each cell's best epoch")
    notes += switches.note(df[df["state"] == "succeeded"])
    published = long.loc[long["paper"].notna(), "paper_source"]
    notes += paper_mod.notes({s if isinstance(s, str) else None for s in published})
    rules = [framing[-1]] if framing and len(framing) < len(order) else []
    return Report(acc, title, long, wide, score=scores, notes=notes,
                  meta={"metric": metric, "acc": acc}, rules_after=rules)


def _cell_text(rec: dict[str, Any], show_split: bool, metric: str) -> str:
    t = cells.text(rec)
    if show_split and metric == "best" and rec["selection_split"]:
        t += f" [{rec['selection_split']}]"
    return t
