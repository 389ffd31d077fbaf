"""The `(paper)` rows: published numbers beside measured ones, with the difference.

Numbers come from `kdrun.reference` and are looked up by architecture (a grid may name a
teacher anything), only for a method's plain row (a sweep point is not the published setting),
and compared only where the cell's jobs ran with the published run's hyperparameters: those
kdrun resolves by default for the pair (the baselines' authors' settings; for `+ls` the LS
authors' logged run of that pair). A cell whose jobs ran otherwise says "settings differ".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kdrun import reference
from kdrun.reference import Published
from kdrun.report import pairs as P
from kdrun.report.cells import number

SUFFIX = " (paper)"


def published_settings(dataset: str, row: str, teacher_arch: str | None,
                       student: str) -> dict[str, Any]:
    """The published run's method hyperparameters, as kdrun resolves them for the pair."""
    from kdrun import methods  # torch: only when a report compares with a paper

    return methods.resolve(row, None, teacher=teacher_arch, student=student, dataset=dataset)


def lookup(dataset: str, row: str, teacher_arch: str | None, student: str,
           params: dict[str, Any] | None = None) -> Published | None:
    """The published number for a cell; with the cell's job `params`, marked
    `settings_differ` unless they equal the published run's settings."""
    pub = _lookup(dataset, row, teacher_arch, student)
    if pub is None or params is None or row in (P.TEACHER_ROW, P.STUDENT_ROW):
        return pub
    if params != published_settings(dataset, row, teacher_arch, student):
        return dataclasses.replace(pub, settings_differ=True)
    return pub


def _lookup(dataset: str, row: str, teacher_arch: str | None, student: str) -> Published | None:
    if row == P.TEACHER_ROW:
        return reference.standalone(dataset, "teachers", teacher_arch) if teacher_arch else None
    if row == P.STUDENT_ROW:
        return reference.standalone(dataset, "students", student)
    if "(" in row or teacher_arch is None:
        return None
    return reference.method(dataset, row, teacher_arch, student)


def teacher_weights(students: Any) -> Published | None:
    """The top-1 torchvision publishes for pretrained teacher weights the students learned
    from (recorded in their configs at enqueue), before kdrun's reference numbers."""
    if "teacher_published" not in students:
        return None
    vals = students["teacher_published"].dropna()
    return Published(float(vals.iloc[0]), None, "torchvision") if len(vals) else None


def columns(pub: Published | None, ours: float) -> dict[str, Any]:
    """Long-form columns: paper, paper_std, paper_source, paper_diff (ours - paper)."""
    if pub is None:
        return {"paper": math.nan, "paper_std": math.nan, "paper_source": None,
                "paper_diff": math.nan, "paper_settings": None}
    std = math.nan if pub.std is None else pub.std
    diff = math.nan if pub.settings_differ else ours - pub.mean
    return {"paper": pub.mean, "paper_std": std, "paper_source": pub.source,
            "paper_diff": diff, "paper_settings": "differ" if pub.settings_differ else "match"}


def text(rec: dict[str, Any]) -> str:
    """`73.33 (Δ -0.21)`: the published value and ours minus it."""
    if math.isnan(rec["paper"]):
        return ""
    if rec.get("paper_settings") == "differ":
        return "settings differ"
    val = number(rec["paper"])
    if not math.isnan(rec["paper_std"]):
        val += f" ± {number(rec['paper_std'])}"
    if math.isnan(rec["paper_diff"]):
        return val
    return f"{val} (Δ {number(rec['paper_diff'], sign=True)})"


def notes(sources: set[str | None]) -> list[str]:
    if not sources:
        return []
    out = ["(paper) rows: the published top-1 and Δ = ours − published; the protocols differ "
           "(see each source), so compare with care"]
    out += [f"paper: {reference.cite(s)}" for s in sorted(sources, key=str)]
    return out
