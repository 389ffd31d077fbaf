"""Report filters: `--dataset`, `--grid`, `--pairs`, `--methods`, `--include-cancelled`.

Filters choose the distilled jobs (the table's cells). The jobs that frame them stay: the
teachers those students learned from and the students trained alone. A vanilla student that
another grid enqueued first (jobs are shared by hash) still counts for a `--grid` when its
dataset, architecture and recipe match a student of that grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from kdrun.errors import UserError
from kdrun.report import pairs as P
from kdrun.report.load import method_labels


def split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


@dataclass
class Filters:
    dataset: str | None = None
    grid: str | None = None
    pairs: tuple[str, ...] = ()  # "teacher->student" (or "teacher:student")
    methods: tuple[str, ...] = ()  # method names or labels; vanilla rows always stay
    include_cancelled: bool = False  # cancelled jobs are dropped before labels are made

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.include_cancelled and (df["state"] == "cancelled").any():
            # a cancelled old variant (e.g. another lr) neither shows as a row nor makes
            # every label carry the setting it differed in
            df = df[df["state"] != "cancelled"].copy()
            df["label"] = method_labels(df)
        for value, col in ((self.dataset, "dataset"), (self.grid, "grid")):
            if value and value not in set(df[col]):
                known = ", ".join(sorted(set(df[col]))) or "(none)"
                raise UserError(f"--{col} {value!r}: no jobs; {col}s in the database: {known}")
        if self.dataset:
            df = df[df["dataset"] == self.dataset]
        keep = (df["kind"] == "student") & df["teacher"].notna()
        if self.grid:
            keep &= df["grid"] == self.grid
        if self.pairs:
            wanted = {p.replace(":", "->") for p in self.pairs}
            have = {P.name(t, s) for t, s in zip(df["teacher"], df["student"], strict=True)
                    if isinstance(t, str)}  # vanilla rows have None/NaN: not pairs
            missing = sorted(wanted - have)
            if missing:
                raise UserError(f"--pairs: no jobs for {', '.join(missing)}; "
                                f"pairs in the database: {', '.join(sorted(have)) or '(none)'}")
            names = [P.name(t, s) for t, s in zip(df["teacher"], df["student"], strict=True)]
            keep &= pd.Series([n in wanted for n in names], index=df.index, dtype=bool)
        if self.methods:
            wanted = set(self.methods)
            dist = df[keep]
            known = set(dist["method"]) | set(dist["label"]) | {"vanilla"}
            if unknown := sorted(wanted - known):
                raise UserError(f"--methods: no jobs for {', '.join(unknown)}; methods in the "
                                f"database: {', '.join(sorted(known)) or '(none)'}")
            keep &= df["method"].isin(wanted) | df["label"].isin(wanted)
        students = df[keep]
        return df[keep | self._frame(df, students)]

    def _frame(self, df: pd.DataFrame, students: pd.DataFrame) -> pd.Series:
        """Teacher jobs and stand-alone students that belong with the chosen students."""
        teachers = (df["kind"] == "teacher") & df["hash"].isin(set(students["teacher_job"]))
        alone = (df["kind"] == "student") & df["teacher"].isna()
        if not (self.grid or self.pairs):
            return teachers | alone
        chosen = {(d, s, _key(r)) for d, s, r in
                  zip(students["dataset"], students["student"], students["recipe"], strict=True)}
        same = pd.Series([(d, s, _key(r)) in chosen for d, s, r in
                          zip(df["dataset"], df["student"], df["recipe"], strict=True)],
                         index=df.index, dtype=bool)
        if self.grid and not self.pairs:
            same |= df["grid"] == self.grid
        return teachers | (alone & same)


def _key(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True)
