"""Teacher->student pairs, row order, and the jobs that frame a pair (teacher, student alone).

A pair is (dataset, teacher name, student arch). Its teacher row comes from the job that
trained that teacher, found through the hash in the students' configs (so two grids' teachers
of the same name stay apart); a teacher given as a checkpoint has no job, and its accuracy is
the one every student's final evaluation measured (`teacher_top1`).
"""

from __future__ import annotations

import pandas as pd

# Rows in the order the papers use; anything else follows in order of first appearance.
METHOD_ORDER = ("vanilla", "kd", "dkd", "dist", "kd+ls", "dkd+ls", "cmkd", "cakd", "rkkd",
                "kd+rkkd", "dkd+rkkd", "dist+rkkd", "kd+cmkd")
STUDENT_ROW = "student"  # the student trained alone (method vanilla), as papers label it
TEACHER_ROW = "teacher"

Pair = tuple[str, str, str]  # dataset, teacher name, student arch


def name(teacher: str | None, student: str) -> str:
    return f"{teacher}->{student}" if teacher else student


def distilled(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["kind"] == "student") & df["teacher"].notna()]


def vanilla(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["kind"] == "student") & df["teacher"].isna()]


def pairs(df: pd.DataFrame) -> list[Pair]:
    """Pairs of the distilled jobs, in the order they were enqueued (the grid's order)."""
    d = distilled(df).sort_values("job_id")
    return list(dict.fromkeys(zip(d["dataset"], d["teacher"], d["student"], strict=True)))


def columns(ps: list[Pair]) -> dict[Pair, str]:
    """Column titles: `t->s`, prefixed by the dataset when several are shown."""
    multi = len({p[0] for p in ps}) > 1
    return {p: (f"{p[0]}:" if multi else "") + name(p[1], p[2]) for p in ps}


def of_pair(df: pd.DataFrame, p: Pair) -> pd.DataFrame:
    d = distilled(df)
    return d[(d["dataset"] == p[0]) & (d["teacher"] == p[1]) & (d["student"] == p[2])]


def alone(df: pd.DataFrame, dataset: str, student: str) -> pd.DataFrame:
    """The student architecture trained alone on the dataset (the `student` row)."""
    v = vanilla(df)
    return v[(v["dataset"] == dataset) & (v["student"] == student)]


def student_row(label: str) -> str:
    """`vanilla` -> `student`; a vanilla sweep point keeps its settings in the row name."""
    return STUDENT_ROW + label[len("vanilla"):] if label.startswith("vanilla") else label


def teacher_jobs(df: pd.DataFrame, students: pd.DataFrame) -> pd.DataFrame:
    """The jobs that trained the teacher(s) of these students."""
    hashes = set(students["teacher_job"].dropna())
    return df[(df["kind"] == "teacher") & df["hash"].isin(hashes)]


def teacher_top1(df: pd.DataFrame, students: pd.DataFrame) -> float:
    """The teacher's test top-1 as the students measured it (the weights they learned from)."""
    vals = pd.to_numeric(students["teacher_top1"], errors="coerce").dropna()
    if len(vals):
        return float(vals.mean())
    t = teacher_jobs(df, students)
    t = t[t["state"] == "succeeded"]
    return float(t["last_top1"].mean()) if len(t) else float("nan")


def order(labels: list[str]) -> list[str]:
    """Method labels in the papers' order; sweep points after their method's plain label."""
    def key(item: tuple[int, str]) -> tuple[int, int, str]:
        i, label = item
        base = label.split("(", 1)[0]
        rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
        return rank, i if rank == len(METHOD_ORDER) else 0, label

    return [label for _, label in sorted(enumerate(dict.fromkeys(labels)), key=key)]
