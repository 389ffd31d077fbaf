"""`curves`: per-epoch test accuracy, training loss and loss components, averaged over seeds.

One series per (pair, method) and per student trained alone. Unfinished jobs contribute the
epochs they have run, so `n` can fall along a curve; a series whose jobs are not all finished
says so in its name. The terminal view shows a few evenly spaced epochs; CSV/JSON hold all.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdrun.report import cells
from kdrun.report import pairs as P
from kdrun.report.cells import number
from kdrun.report.table import Report

BASE_QUANTITIES = ("test_top1", "test_top5", "val_top1", "train_top1", "train_loss", "lr")
LONG_COLS = ["dataset", "series", "teacher", "student", "row", "quantity", "epoch", "mean",
             "std", "n"]
SHOWN_EPOCHS = 10
# The terminal view: accuracy and losses; top-5, train top-1 and lr are in CSV/JSON only.
DISPLAYED = ("test_top1", "val_top1", "train_loss")


def quantities(epochs: pd.DataFrame) -> list[str]:
    comps = sorted(c for c in epochs.columns if c.startswith("loss."))
    have = [q for q in BASE_QUANTITIES if q in epochs.columns and epochs[q].notna().any()]
    return have + comps


def _series(df: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    out = []
    ps = P.pairs(df)
    titles = P.columns(ps)
    multi = df["dataset"].nunique() > 1
    students = list(dict.fromkeys((p[0], p[2]) for p in ps)) or list(dict.fromkeys(
        zip(P.vanilla(df)["dataset"], P.vanilla(df)["student"], strict=True)))
    for dataset, student in students:
        for label, grp in P.alone(df, dataset, student).groupby("label", sort=False):
            name = (f"{dataset}:" if multi else "") + student
            out.append(({"dataset": dataset, "series": name, "teacher": None,
                         "student": student, "row": P.student_row(label)}, grp))
    for p in ps:
        mine = P.of_pair(df, p)
        for label in P.order(list(mine["label"])):
            out.append(({"dataset": p[0], "series": titles[p], "teacher": p[1], "student": p[2],
                         "row": label}, mine[mine["label"] == label]))
    return out


def long_table(df: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (n-1) and n over seeds of every quantity at every epoch of every
    series: one vectorised group-by per series (millions of epoch rows at scale)."""
    qs = quantities(epochs)
    out = []
    values = epochs[["job_id", "epoch"]].copy()
    for q in qs:
        values[q] = pd.to_numeric(epochs[q], errors="coerce").astype(float)
    for key, jobs in _series(df):
        ep = values[values["job_id"].isin(set(jobs["job_id"]))]
        if ep.empty:
            continue
        agg = ep.groupby("epoch")[qs].agg(["mean", "std", "count"])
        for q in qs:
            part = agg[q]
            part = part[part["count"] > 0]
            out.append(pd.DataFrame({**key, "quantity": q, "epoch": part.index.astype(int),
                                     "mean": part["mean"].to_numpy(),
                                     "std": part["std"].to_numpy(),
                                     "n": part["count"].astype(int).to_numpy()}))
    if not out:
        return pd.DataFrame(columns=LONG_COLS)
    long = pd.concat(out, ignore_index=True)[LONG_COLS]
    order = {q: i for i, q in enumerate(qs)}  # series, then epoch, then quantity (as before)
    key = long["quantity"].map(order)
    run = (long[["series", "row"]] != long[["series", "row"]].shift()).any(axis=1).cumsum()
    return long.assign(_r=run, _q=key).sort_values(["_r", "epoch", "_q"], kind="stable") \
        .drop(columns=["_r", "_q"]).reset_index(drop=True)


def shown_epochs(all_epochs: list[int], k: int = SHOWN_EPOCHS) -> list[int]:
    """At most k epochs, evenly spaced, always the first and the last."""
    if len(all_epochs) <= k:
        return all_epochs
    idx = sorted({round(i * (len(all_epochs) - 1) / (k - 1)) for i in range(k)})
    return [all_epochs[i] for i in idx]


def build(df: pd.DataFrame, epochs: pd.DataFrame) -> Report:
    long = long_table(df, epochs)
    title = "per-epoch curves, mean ± std over seeds"
    notes: list[str] = []
    if long.empty:
        return Report("curves", title, long, pd.DataFrame(), notes=["no epochs recorded yet"])
    eps = shown_epochs(sorted(set(long["epoch"])))
    notes.append("shown: test top-1 and the training loss with its components; "
                 "--format csv/json also has test top-5, train top-1 and lr")
    if len(eps) < long["epoch"].nunique():
        notes.append(f"showing {len(eps)} of {long['epoch'].nunique()} epochs; "
                     "--format csv/json has every epoch")
    states = {(k["series"], k["row"]): cells.states(j) for k, j in _series(df)}
    text: dict[str, dict[str, str]] = {}
    for (series, row), grp in long.groupby(["series", "row"], sort=False):
        st = states[(series, row)]
        done = st["total"] - sum(st[s] for s in cells.PENDING)
        tag = "" if done == st["total"] else (
            f" ({cells.pending_text({'n': done, **st})})")
        for q in dict.fromkeys(grp["quantity"]):
            if q not in DISPLAYED and not q.startswith("loss."):
                continue
            digits = 4 if q == "lr" else (2 if "top" in q else 3)
            recs = grp[grp["quantity"] == q]
            text[f"{series} · {row}{tag} · {q}"] = {
                f"ep {r['epoch']}": _cell(r, digits) for r in recs.to_dict("records")
                if r["epoch"] in eps}
    wide = pd.DataFrame.from_dict(text, orient="index").reindex(columns=[f"ep {e}" for e in eps])
    wide = wide.fillna("")
    wide.index.name = "series · method · quantity"
    if (long["n"].groupby([long["series"], long["row"]]).nunique() > 1).any():
        notes.append("n varies along a curve where seeds have run different numbers of epochs")
    return Report("curves", title, long, wide, notes=notes)


def _cell(r: dict[str, Any], digits: int) -> str:
    if math.isnan(r["std"]):
        return number(r["mean"], digits)
    return f"{number(r['mean'], digits)} ± {number(r['std'], digits)}"
