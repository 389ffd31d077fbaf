"""Jobs, results and per-epoch metrics as pandas DataFrames: the input every report reads."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from kdrun.params import flatten

RESULT_COLS = [c.name for c in Result.__table__.columns if c.name != "job_id"]
EPOCH_COLS = [c.name for c in EpochMetric.__table__.columns if c.name not in ("id", "components")]
JOB_COLS = ["job_id", "hash", "grid", "kind", "dataset", "teacher", "teacher_arch", "teacher_job",
            "student", "method", "seed", "state", "params", "recipe"]


def load_jobs(db: Database) -> pd.DataFrame:
    """One row per job (all states) with its result columns (NaN when not finished).

    `teacher_job` is the hash of the job that trained the student's teacher (None for a
    teacher given as a checkpoint), so a teacher row is found by identity, not by name.
    """
    with db.read() as s:
        rows = s.execute(select(Job, Result).outerjoin(Result, Result.job_id == Job.id)
                         .order_by(Job.id)).all()
    recs = []
    for job, res in rows:
        t = job.config.get("teacher") or {}
        rec = {"job_id": job.id, "hash": job.hash, "grid": job.grid, "kind": job.kind,
               "dataset": job.dataset, "teacher": job.teacher, "teacher_arch": t.get("arch"),
               "teacher_job": t.get("job"), "student": job.student, "method": job.method,
               "seed": job.seed, "state": job.state, "params": job.config["method"]["params"],
               "recipe": job.config["recipe"]}
        for c in RESULT_COLS:
            rec[c] = getattr(res, c) if res is not None else None
        recs.append(rec)
    df = pd.DataFrame(recs, columns=[*JOB_COLS, *RESULT_COLS])
    for c in RESULT_COLS:  # all-None columns would be object dtype; numbers must stay numbers
        if c not in ("selection_split", "checkpoint", "sha256", "switches"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["label"] = _labels(df)
    return df


def load_epochs(db: Database, job_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """Per-epoch metrics, one row per (job, epoch); loss components as `loss.<name>` columns."""
    q = select(EpochMetric).order_by(EpochMetric.job_id, EpochMetric.epoch)
    ids = None if job_ids is None else [int(i) for i in job_ids]
    recs = []
    with db.read() as s:
        for i in range(0, len(ids), 500) if ids is not None else [None]:
            chunk = q if i is None else q.where(EpochMetric.job_id.in_(ids[i:i + 500]))
            for m in s.execute(chunk).scalars():
                rec = {c: getattr(m, c) for c in EPOCH_COLS}
                rec.update({f"loss.{k}": v for k, v in (m.components or {}).items()})
                recs.append(rec)
    df = pd.DataFrame(recs)
    return df if len(df) else pd.DataFrame(columns=EPOCH_COLS)


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


def _varies_within_pair(grp: pd.DataFrame, flats: list[dict], key: str) -> bool:
    seen: dict[tuple, set] = {}
    pairs = zip(grp["dataset"], grp["teacher"], grp["student"], strict=True)
    for pair, f in zip(pairs, flats, strict=True):
        seen.setdefault(pair, set()).add(str(f.get(key)))
    return any(len(v) > 1 for v in seen.values())
