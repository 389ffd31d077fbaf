"""Jobs, results and per-epoch metrics as pandas DataFrames: the input every report reads."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd
from sqlalchemy import Text, cast, select

from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from kdrun.params import flatten
from kdrun.report import cells

RESULT_COLS = [c.name for c in Result.__table__.columns if c.name != "job_id"]
EPOCH_COLS = [c.name for c in EpochMetric.__table__.columns if c.name not in ("id", "components")]
JOB_COLS = ["job_id", "hash", "grid", "kind", "dataset", "teacher", "teacher_arch", "teacher_job",
            "teacher_published", "student", "method", "seed", "state", "params", "recipe"]


def load_jobs(db: Database) -> pd.DataFrame:
    """One row per job (all states) with its result columns (NaN when not finished).

    `teacher_job` is the hash of the job that trained the student's teacher (None for a
    teacher given as a checkpoint), so a teacher row is found by identity, not by name.
    """
    # Plain columns, not ORM objects (100k jobs): each row reads like a Job and its Result.
    job_cols = [Job.id, Job.hash, Job.grid, Job.kind, Job.dataset, Job.teacher, Job.student,
                Job.method, Job.seed, Job.state, Job.config]
    res_cols = [Result.__table__.c[c].label(f"r_{c}") for c in RESULT_COLS]
    with db.read() as s:
        rows = s.connection().execute(
            select(*job_cols, Result.job_id.label("r_job_id"), *res_cols)
            .outerjoin(Result, Result.job_id == Job.id).order_by(Job.id)).all()
    raw = pd.DataFrame.from_records(
        rows, columns=[c.key for c in job_cols] + ["r_job_id", *RESULT_COLS])
    configs = list(raw["config"])
    teachers = [c.get("teacher") or {} for c in configs]
    df = pd.DataFrame({
        "job_id": raw["id"], **{c: raw[c] for c in ("hash", "grid", "kind", "dataset", "teacher")},
        "teacher_arch": [t.get("arch") for t in teachers],
        "teacher_job": [t.get("job") for t in teachers],
        "teacher_published": [t.get("published_top1") for t in teachers],
        **{c: raw[c] for c in ("student", "method", "seed", "state")},
        "params": [c["method"]["params"] for c in configs],
        "recipe": [c["recipe"] for c in configs],
        **{c: raw[c] for c in RESULT_COLS}}, columns=[*JOB_COLS, *RESULT_COLS])
    for c in RESULT_COLS:  # all-None columns would be object dtype; numbers must stay numbers
        if c not in ("selection_split", "checkpoint", "sha256", "switches"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["label"] = _labels(df)
    df["state"] = cells.with_blocked(df)
    return df


def load_epochs(db: Database, job_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """Per-epoch metrics, one row per (job, epoch); loss components as `loss.<name>` columns.

    Read as plain columns (no ORM objects: millions of rows), the components' JSON text
    parsed in one call per chunk rather than once per row."""
    cols = [EpochMetric.__table__.c[c] for c in EPOCH_COLS]
    raw = cast(EpochMetric.components, Text)  # the JSON text, not decoded per row
    q = select(*cols, raw).order_by(EpochMetric.job_id, EpochMetric.epoch)
    ids = None if job_ids is None else sorted({int(i) for i in job_ids})
    frames = []
    with db.read() as s:
        for i in range(0, len(ids), 500) if ids is not None else [None]:
            chunk = q if i is None else q.where(EpochMetric.job_id.in_(ids[i:i + 500]))
            rows = s.connection().execute(chunk).all()  # Core rows: no ORM result layer
            if not rows:
                continue
            frame = pd.DataFrame.from_records([r[:-1] for r in rows], columns=EPOCH_COLS)
            comps = json.loads("[" + ",".join(r[-1] or "null" for r in rows) + "]")
            if any(comps):
                extra = pd.DataFrame.from_records([c or {} for c in comps])
                frame = pd.concat([frame, extra.add_prefix("loss.")], axis=1)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=EPOCH_COLS)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.sort_values(["job_id", "epoch"], kind="stable", ignore_index=True)


def _labels(df: pd.DataFrame) -> pd.Series:
    """Method labels that tell sweep points apart (hyperparameters or recipe that vary)."""
    labels = pd.Series(df["method"], index=df.index, dtype=object)
    for name, grp in df[df["kind"] == "student"].groupby("method"):
        flats = [{**flatten(p), **flatten(r, "recipe.")}
                 for p, r in zip(grp["params"], grp["recipe"], strict=True)]
        keys = set().union(*flats)
        varying = {k for k in keys if len({str(f.get(k)) for f in flats}) > 1}
        # per-pair defaults (e.g. DKD's beta, lr for small students) vary by pair, not by sweep
        varying = {k for k in varying if _varies_within_pair(grp, flats, k)}
        for idx, f in zip(grp.index, flats, strict=True):
            labels[idx] = name if not varying else (
                f"{name}({', '.join(f'{k}={f.get(k)}' for k in sorted(varying))})")
    return labels


method_labels = _labels  # public: recomputed after dropping jobs (kdrun.report.filters)


def _varies_within_pair(grp: pd.DataFrame, flats: list[dict], key: str) -> bool:
    seen: dict[tuple, set] = {}
    pairs = zip(grp["dataset"], grp["teacher"], grp["student"], strict=True)
    for pair, f in zip(pairs, flats, strict=True):
        seen.setdefault(pair, set()).add(str(f.get(key)))
    return any(len(v) > 1 for v in seen.values())
