"""`agreement`: how closely each distilled student follows its teacher on the test set.

The trainer measures these in its final evaluation (final weights, so the top-1 shown beside
them is the last epoch's): top-1 agreement (% of test images where both predict the same
class), mean per-sample Spearman rho and Kendall tau between the two logit vectors, and
KL(teacher || student). Rank correlations are what CMKD, RKKD and DIST optimise, so this
table shows whether a method moved the quantity it targets.
"""

from __future__ import annotations

import math

import pandas as pd

from kdrun.report import cells
from kdrun.report import pairs as P
from kdrun.report.table import Report

# (result column, header, digits, lower is better)
QUANTITIES = (
    ("last_top1", "top1 (last)", 2, False),
    ("agree_top1", "agree top1 (%)", 2, False),
    ("spearman", "Spearman ρ", 3, False),
    ("kendall", "Kendall τ", 3, False),
    ("kl", "KL(t‖s)", 3, True),
)
LONG_COLS = ["dataset", "pair", "teacher", "student", "row", "quantity", "mean", "std", "n",
             "total", *cells.PENDING]


def long_table(df: pd.DataFrame) -> pd.DataFrame:
    ps = P.pairs(df)
    titles = P.columns(ps)
    out = []
    for p in ps:
        mine = P.of_pair(df, p)
        for label, grp in mine.groupby("label", sort=False):
            for col, _, _, _ in QUANTITIES:
                vals = pd.to_numeric(grp[col], errors="coerce")
                out.append({"dataset": p[0], "pair": titles[p], "teacher": p[1],
                            "student": p[2], "row": label, "quantity": col,
                            **cells.summarize(grp, vals)})
    return pd.DataFrame(out, columns=LONG_COLS)


def build(df: pd.DataFrame) -> Report:
    long = long_table(df)
    title = "student-teacher agreement on the test set (final weights), mean ± std (n)"
    notes = ["agree top1: % of test images where student and teacher predict the same class; "
             "ρ, τ: mean per-sample rank correlation of the logits; KL(t‖s): lower is closer"]
    if long.empty:
        return Report("agreement", title, long, pd.DataFrame(), notes=notes)
    headers = {col: h for col, h, _, _ in QUANTITIES}
    digits = {col: d for col, _, d, _ in QUANTITIES}
    text: dict[str, dict[str, str]] = {}
    score: dict[str, dict[str, float]] = {}
    rows: list[str] = []
    rules: list[str] = []
    for pair in dict.fromkeys(long["pair"]):
        sub = long[long["pair"] == pair]
        for label in P.order(list(sub["row"])):
            key = f"{pair} · {label}"
            rows.append(key)
            recs = sub[sub["row"] == label].to_dict("records")
            text[key] = {headers[r["quantity"]]: cells.text(r, digits[r["quantity"]])
                         for r in recs}
            score[key] = {headers[r["quantity"]]: r["mean"] if r["n"] else math.nan
                          for r in recs}
        rules.append(rows[-1])
    cols = [h for _, h, _, _ in QUANTITIES]
    wide = pd.DataFrame.from_dict(text, orient="index").reindex(index=rows, columns=cols)
    wide = wide.fillna("-")
    wide.index.name = "pair · method"
    scores = pd.DataFrame.from_dict(score, orient="index").reindex(index=rows, columns=cols)
    notes += cells.incomplete_note(long)
    lower = frozenset(h for _, h, _, low in QUANTITIES if low)
    return Report("agreement", title, long, wide, score=scores, lower_is_better=lower,
                  notes=notes, rules_after=rules[:-1])
