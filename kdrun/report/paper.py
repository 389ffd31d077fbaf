"""The `(paper)` rows: published numbers beside measured ones, with the difference.

Numbers come from `kdrun.reference` and are looked up by architecture (a grid may name a
teacher anything), only for a method's plain row (a sweep point is not the published setting).
"""

from __future__ import annotations

import math
from typing import Any

from kdrun import reference
from kdrun.reference import Published
from kdrun.report import pairs as P
from kdrun.report.cells import number

SUFFIX = " (paper)"


def lookup(dataset: str, row: str, teacher_arch: str | None, student: str) -> Published | None:
    if row == P.TEACHER_ROW:
        return reference.standalone(dataset, "teachers", teacher_arch) if teacher_arch else None
    if row == P.STUDENT_ROW:
        return reference.standalone(dataset, "students", student)
    if "(" in row or teacher_arch is None:
        return None
    return reference.method(dataset, row, teacher_arch, student)


def columns(pub: Published | None, ours: float) -> dict[str, Any]:
    """Long-form columns: paper, paper_std, paper_source, paper_diff (ours - paper)."""
    if pub is None:
        return {"paper": math.nan, "paper_std": math.nan, "paper_source": None,
                "paper_diff": math.nan}
    std = math.nan if pub.std is None else pub.std
    return {"paper": pub.mean, "paper_std": std, "paper_source": pub.source,
            "paper_diff": ours - pub.mean}


def text(rec: dict[str, Any]) -> str:
    """`73.33 (Δ -0.21)`: the published value and ours minus it."""
    if math.isnan(rec["paper"]):
        return ""
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
