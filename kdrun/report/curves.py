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
from kdrun.report.ahead import DISPLAYED, shown_epochs
from kdrun.report.cells import number
from kdrun.report.table import Report

BASE_QUANTITIES = ("test_top1", "test_top5", "val_top1", "train_top1", "train_loss", "lr")
LONG_COLS = ["dataset", "series", "teacher", "student", "row", "quantity", "epoch", "mean",
             "std", "n"]


def quantities(epochs: pd.DataFrame) -> list[str]:
    comps = sorted(c for c in epochs.columns if c.startswith("loss."))
    have = [q for q in BASE_QUANTITIES if q in epochs.columns and epochs[q].notna().any()]
    return have + comps


def series_jobs(df: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each curve's key (dataset, series, teacher, student, row) and its jobs: the student
    trained alone per label, then each pair's methods in the papers' order."""
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


def long_table(df: pd.DataFrame, epochs: pd.DataFrame,
               series: list[tuple[dict[str, Any], pd.DataFrame]] | None = None) -> pd.DataFrame:
    """Mean, sample std (n-1) and n over seeds of every quantity at every epoch of every
    series: one vectorised group-by over (series, epoch) for millions of epoch rows.
    Ordered by series, then epoch, then quantity."""
    series = series_jobs(df) if series is None else series
    qs = quantities(epochs)
    if not series or not qs or epochs.empty:
        return pd.DataFrame(columns=LONG_COLS)
    # a job is in one series at most (one dataset, teacher, student and label)
    number = {j: i for i, (_, jobs) in enumerate(series) for j in jobs["job_id"]}
    values = epochs[["epoch", *qs]].assign(_s=epochs["job_id"].map(number))
    values = values[values["_s"].notna()].astype({"_s": int})
    if values.empty:
        return pd.DataFrame(columns=LONG_COLS)
    agg = values.groupby(["_s", "epoch"])[qs].agg(["mean", "std", "count"])
    parts = []
    for i, q in enumerate(qs):
        part = agg[q][agg[q]["count"] > 0]
        parts.append(pd.DataFrame({
            "_s": part.index.get_level_values("_s"), "_q": i, "quantity": q,
            "epoch": part.index.get_level_values("epoch").astype(int),
            "mean": part["mean"].to_numpy(), "std": part["std"].to_numpy(),
            "n": part["count"].astype(int).to_numpy()}))
    long = pd.concat(parts, ignore_index=True).sort_values(["_s", "epoch", "_q"],
                                                           kind="stable", ignore_index=True)
    keys = pd.DataFrame([key for key, _ in series])
    for col in ("dataset", "series", "teacher", "student", "row"):
        long[col] = keys[col].to_numpy()[long["_s"].to_numpy()]
    return long[LONG_COLS]


def epochs_run(series: list[tuple[dict[str, Any], pd.DataFrame]]) -> list[int]:
    """Every epoch some job of a series has recorded (its rows are 1..epochs_done)."""
    done = [int(d) for _, jobs in series for d in jobs["epochs_done"].dropna()]
    return list(range(1, max(done) + 1)) if done and max(done) > 0 else []


def build(df: pd.DataFrame, epochs: pd.DataFrame, shown: list[int] | None = None,
          series: list[tuple[dict[str, Any], pd.DataFrame]] | None = None) -> Report:
    """The curves report. `shown`: the epochs the terminal view shows (`shown_epochs` of
    `epochs_run`), when `epochs` holds only those (the long form then has only them too).
    `series`: `series_jobs(df)` when the caller has it already."""
    series = series_jobs(df) if series is None else series
    long = long_table(df, epochs, series)
    title = "per-epoch curves, mean ± std over seeds"
    notes: list[str] = []
    if long.empty:
        return Report("curves", title, long, pd.DataFrame(), notes=["no epochs recorded yet"])
    if shown is None:
        run = sorted(set(long["epoch"]))
        n_varies = bool((long["n"].groupby([long["series"], long["row"]]).nunique() > 1).any())
    else:  # only the shown epochs were read: the rest from each job's last epoch
        run = epochs_run(series)
        n_varies = any(jobs.loc[jobs["epochs_done"] > 0, "epochs_done"].nunique() > 1
                       for _, jobs in series)
    eps = shown_epochs(run) if shown is None else shown
    notes.append("shown: test top-1 and the training loss with its components; "
                 "--format csv/json also has test top-5, train top-1 and lr")
    if len(eps) < len(run):
        notes.append(f"showing {len(eps)} of {len(run)} epochs; "
                     "--format csv/json has every epoch")
    states = {(k["series"], k["row"]): cells.states(j) for k, j in series}
    view = long[long["epoch"].isin(eps) & (long["quantity"].isin(DISPLAYED)
                                           | long["quantity"].str.startswith("loss."))]
    # one walk over the rows (ordered by series, then epoch): a line per series and quantity
    text: dict[str, dict[str, str]] = {}
    tags: dict[tuple[str, str], str] = {}
    for name, row, q, e, mean, std in zip(view["series"], view["row"], view["quantity"],
                                          view["epoch"], view["mean"], view["std"], strict=True):
        if (name, row) not in tags:
            st = states[(name, row)]
            done = st["total"] - sum(st[s] for s in cells.PENDING)
            tags[(name, row)] = "" if done == st["total"] else (
                f" ({cells.pending_text({'n': done, **st})})")
        digits = 4 if q == "lr" else (2 if "top" in q else 3)
        text.setdefault(f"{name} · {row}{tags[(name, row)]} · {q}", {})[f"ep {e}"] = \
            _cell(mean, std, digits)
    wide = pd.DataFrame.from_dict(text, orient="index").reindex(columns=[f"ep {e}" for e in eps])
    wide = wide.fillna("")
    wide.index.name = "series · method · quantity"
    if n_varies:
        notes.append("n varies along a curve where seeds have run different numbers of epochs")
    return Report("curves", title, long, wide, notes=notes)


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(std):
        return number(mean, digits)
    return f"{number(mean, digits)} ± {number(std, digits)}"
