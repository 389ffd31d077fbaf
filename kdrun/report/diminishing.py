"""`diminishing`: does a stronger teacher make a stronger student?

For each student distilled from a ladder of teachers (two or more), and each method: the
student's top-1 at every teacher, against the teacher's own top-1 as the students measured it
(the weights they actually learned from). Summaries per method:
- slope: least-squares slope of mean student top-1 on teacher top-1 (student points gained
  per teacher point; 0 = a stronger teacher does not help, < 0 = it hurts);
- gain: student top-1 with the strongest teacher minus with the weakest, paired by seed
  with a 95% t interval.
The method with the largest slope (ties broken by gain) is marked; it is called the one that
best turns a stronger teacher into a stronger student only when its gain interval lies above
every other method's, else the note says that no method is clearly best.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdrun import reference
from kdrun.report import cells, metrics
from kdrun.report import pairs as P
from kdrun.report.cells import number
from kdrun.report.stats import paired, slope
from kdrun.report.table import Report

LONG_COLS = ["dataset", "student", "row", "teacher", "teacher_arch", "teacher_top1", "mean",
             "std", "n", "total", *cells.PENDING, "slope", "gain", "gain_lo", "gain_hi", "best",
             "paper", "paper_teacher_top1", "paper_source"]
LEVEL = 0.95


def _ladders(df: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(dataset, student, teacher names) for students with two or more teachers."""
    out = []
    d = P.distilled(df)
    for (dataset, student), grp in d.groupby(["dataset", "student"], sort=False):
        teachers = list(dict.fromkeys(grp.sort_values("job_id")["teacher"]))
        if len(teachers) >= 2:
            out.append((dataset, student, teachers))
    return out


def _seed_values(jobs: pd.DataFrame, vals: pd.Series) -> dict[int, float]:
    done = jobs[(jobs["state"] == "succeeded") & vals.loc[jobs.index].notna()]
    return {int(s): float(vals.loc[i]) for i, s in zip(done.index, done["seed"], strict=True)}


def _method_rows(df: pd.DataFrame, vals: pd.Series, dataset: str, student: str,
                 teachers: list[str], x: dict[str, float]) -> list[dict[str, Any]]:
    d = P.distilled(df)
    d = d[(d["dataset"] == dataset) & (d["student"] == student)]
    out = []
    for label in P.order(list(d["label"])):
        mine = d[d["label"] == label]
        recs = []
        for t in teachers:
            jobs = mine[mine["teacher"] == t]
            if jobs.empty:
                continue
            arch = jobs["teacher_arch"].iloc[0]
            recs.append({"dataset": dataset, "student": student, "row": label, "teacher": t,
                         "teacher_arch": arch, "teacher_top1": x[t],
                         **cells.summarize(jobs, vals.loc[jobs.index]), "_jobs": jobs})
        have = [r for r in recs if r["n"] > 0 and not math.isnan(r["teacher_top1"])]
        s = slope([r["teacher_top1"] for r in have], [r["mean"] for r in have])
        gain = {"gain": math.nan, "gain_lo": math.nan, "gain_hi": math.nan}
        if len(have) >= 2:
            weak = min(have, key=lambda r: r["teacher_top1"])
            strong = max(have, key=lambda r: r["teacher_top1"])
            pr = paired(_seed_values(strong["_jobs"], vals), _seed_values(weak["_jobs"], vals),
                        LEVEL)
            gain = {"gain": pr.mean, "gain_lo": pr.lo, "gain_hi": pr.hi}
        pub = reference.ladder(dataset, student, label)
        pub_t = reference.ladder(dataset, student, "teachers")
        for r in recs:
            r.pop("_jobs")
            p = pub.get(r["teacher_arch"])
            pt = pub_t.get(r["teacher_arch"])
            r.update({"slope": s, **gain, "best": False,
                      "paper": p.mean if p else math.nan,
                      "paper_teacher_top1": pt.mean if pt else math.nan,
                      "paper_source": p.source if p else None})
        out += recs
    return out


def long_table(df: pd.DataFrame, metric: str = "best",
               epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    vals = metrics.values(df, "top1", metric, epochs)
    out: list[dict[str, Any]] = []
    for dataset, student, teachers in _ladders(df):
        x = {t: P.teacher_top1(df, P.of_pair(df, (dataset, t, student))) for t in teachers}
        teachers = sorted(teachers, key=lambda t: (math.isnan(x[t]), x[t]))
        rows = _method_rows(df, vals, dataset, student, teachers, x)
        slopes = {r["row"]: (r["slope"], r["gain"]) for r in rows if not math.isnan(r["slope"])}
        if slopes:
            best = max(slopes, key=lambda k: (slopes[k][0], _nan_low(slopes[k][1])))
            for r in rows:
                r["best"] = r["row"] == best
        for label, grp in P.alone(df, dataset, student).groupby("label", sort=False):
            out.append({"dataset": dataset, "student": student, "row": P.student_row(label),
                        "teacher": None, **cells.summarize(grp, vals.loc[grp.index])})
        out += rows
    return pd.DataFrame(out, columns=LONG_COLS)


def _clearly_best(ladder: pd.DataFrame) -> bool:
    """Whether the largest-slope method's gain interval lies above every other method's
    (the only case where calling it best is more than noise)."""
    per = ladder.drop_duplicates("row").set_index("row")
    is_best = per["best"].astype(bool)
    if len(per) < 2 or not is_best.any():
        return False
    best = per[is_best].iloc[0]
    others = per[~is_best]
    if math.isnan(best["gain_lo"]) or others["gain_hi"].isna().any():
        return False
    return bool(best["gain_lo"] > others["gain_hi"].max())


def _nan_low(v: float) -> float:
    return -math.inf if math.isnan(v) else v


def _gain_text(r: dict[str, Any]) -> str:
    if math.isnan(r["gain"]):
        return "–"
    ci = "" if math.isnan(r["gain_lo"]) else (
        f" [{number(r['gain_lo'], sign=True)}, {number(r['gain_hi'], sign=True)}]")
    return number(r["gain"], sign=True) + ci


def _paper_summary(recs: list[dict[str, Any]]) -> tuple[float, float]:
    pts = sorted((r["paper_teacher_top1"], r["paper"]) for r in recs
                 if not math.isnan(r["paper"]) and not math.isnan(r["paper_teacher_top1"]))
    if len(pts) < 2:
        return math.nan, math.nan
    return slope([p[0] for p in pts], [p[1] for p in pts]), pts[-1][1] - pts[0][1]


def build(df: pd.DataFrame, metric: str = "best",
          epochs: pd.DataFrame | None = None) -> Report:
    long = long_table(df, metric, epochs)
    title = (f"student top1 (%) vs teacher top1 across a teacher ladder, {metrics.DESCRIBE[metric]}"
             ", mean ± std (n); slope = student points per teacher point")
    meta = {"metric": metric, "level": LEVEL}
    notes = ["columns: teachers, weakest first, with the top-1 the students measured for them; "
             f"gain: strongest minus weakest teacher, paired by seed [{LEVEL:.0%} CI]"]
    if long.empty:
        notes.append("no student was distilled from two or more teachers")
        return Report("diminishing", title, long, pd.DataFrame(), notes=notes, meta=meta)
    multi = long["dataset"].nunique() > 1
    ladder = long[long["teacher"].notna()]
    x = ladder.groupby(["dataset", "teacher"])["teacher_top1"].mean().sort_values()
    tcols = [f"{d}:{t} ({number(v, 1)})" if multi else f"{t} ({number(v, 1)})"
             for (d, t), v in x.items()]
    colname = dict(zip(x.index, tcols, strict=True))
    cols = [*tcols, "slope", "gain"]
    text: dict[str, dict[str, str]] = {}
    score: dict[str, dict[str, float]] = {}
    sources: set[str | None] = set()
    rules: list[str] = []
    for (dataset, student), grp in long.groupby(["dataset", "student"], sort=False):
        who = f"{dataset}:{student}" if multi else student
        for r in grp[grp["teacher"].isna()].to_dict("records"):
            notes.append(f"{who} {r['row']} (trained alone): {cells.text(r)}")
        lad = grp[grp["teacher"].notna()]
        xs = lad.groupby("teacher")["teacher_top1"].first().dropna()
        if len(xs) >= 2:
            notes.append(f"{who}: the teachers span {number(xs.max() - xs.min())} points "
                         f"({number(xs.min())} to {number(xs.max())}); over a narrow span the "
                         "slope is only as good as the students' std allows")
        trow = f"{who} · teacher"
        text[trow] = {colname[(dataset, t)]: number(v) for t, v in
                      lad.groupby("teacher")["teacher_top1"].first().items()}
        score[trow] = {}
        clear = _clearly_best(lad)
        for label in P.order(list(lad["row"])):
            recs = lad[lad["row"] == label].to_dict("records")
            key = f"{who} · {label}"
            first = recs[0]
            text[key] = {colname[(dataset, r["teacher"])]: cells.text(r) for r in recs}
            text[key]["slope"] = number(first["slope"], 3, sign=True) + (
                (" (best)" if clear else " (largest)") if first["best"] else "")
            text[key]["gain"] = _gain_text(first)
            score[key] = {colname[(dataset, r["teacher"])]: r["mean"] if r["n"] else math.nan
                          for r in recs}
            score[key]["slope"] = first["slope"]
            score[key]["gain"] = first["gain"]
            if any(not math.isnan(r["paper"]) for r in recs):
                ps, pg = _paper_summary(recs)
                text[key + " (paper)"] = {
                    **{colname[(dataset, r["teacher"])]: number(r["paper"]) for r in recs
                       if not math.isnan(r["paper"])},
                    "slope": number(ps, 3, sign=True), "gain": number(pg, sign=True)}
                score[key + " (paper)"] = {}
                sources |= {r["paper_source"] for r in recs if not math.isnan(r["paper"])}
            if first["best"] and clear:
                notes.append(f"{who}: {label} best turns a stronger teacher into a stronger "
                             f"student (slope {number(first['slope'], 3, sign=True)}, gain "
                             f"{_gain_text(first)}, an interval clear of every other "
                             "method's)")
            elif first["best"]:
                notes.append(f"{who}: {label} has the largest slope "
                             f"({number(first['slope'], 3, sign=True)}), but its gain "
                             f"{_gain_text(first)} overlaps another method's interval: no "
                             "method is clearly best with these seeds")
        rules.append(list(text)[-1])
    order = list(text)
    wide = pd.DataFrame.from_dict(text, orient="index").reindex(index=order, columns=cols)
    wide = wide.fillna("")
    wide.index.name = "student · method"
    scores = pd.DataFrame.from_dict(score, orient="index").reindex(index=order, columns=cols)
    notes += cells.incomplete_note(long)
    if sources:
        notes.append("(paper) rows: published student top-1 per teacher, slope and gain over "
                     "the published teachers' own top-1")
        notes += [f"paper: {reference.cite(s)}" for s in sorted(sources, key=str)]
    return Report("diminishing", title, long, wide, score=scores, notes=notes, meta=meta,
                  rules_after=rules[:-1])
