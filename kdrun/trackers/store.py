"""Tracker runs in the database: written by the supervisor (lease-fenced, like every write
about a job), read back when the job resumes, by `kdrun show`, the HTML report and the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from kdrun.db.clock import db_now
from kdrun.db.engine import Database, retrying
from kdrun.db.models import EpochMetric, Job, TrackerRun
from kdrun.db.queue import LeaseLost

if TYPE_CHECKING:
    import pandas as pd

FIELDS = ("tracker", "run_id", "name", "project", "url", "path")
COLUMNS = ["job_id", *FIELDS, "created_at", "updated_at"]
EPOCH_FIELDS = ("epoch", "lr", "train_loss", "components", "train_top1", "test_top1",
                "test_top5", "val_top1", "epoch_time_s", "images_per_s")


@retrying
def record(db: Database, claim: Any, rec: dict[str, Any]) -> None:
    """Store (or update) one tracker run of the claimed job; LeaseLost when the lease is
    gone, like every other write about the job."""
    with db.write() as s:
        holder = s.execute(select(Job.id).where(
            Job.id == claim.job_id, Job.lease_token == claim.token,
            Job.state == "running")).scalar()
        if holder is None:
            raise LeaseLost(f"job {claim.job_id}: lease {claim.token[:8]} is no longer held")
        row = s.execute(select(TrackerRun).where(TrackerRun.job_id == claim.job_id,
                                                 TrackerRun.tracker == rec["tracker"])).scalar()
        values = {f: (str(rec[f])[:1000] if rec.get(f) is not None else None) for f in FIELDS}
        if row is None:
            s.add(TrackerRun(job_id=claim.job_id, created_at=db_now(), updated_at=db_now(),
                             **values))
        else:
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = db_now()


def job_tracker_runs(db: Database, job_id: int) -> list[dict[str, Any]]:
    """A job's tracker runs (for `kdrun show JOB`): tracker, run_id, name, project, url,
    path, created_at, updated_at."""
    with db.read() as s:
        rows = s.execute(select(TrackerRun).where(TrackerRun.job_id == job_id)
                         .order_by(TrackerRun.tracker)).scalars().all()
        return [{c: getattr(r, c) for c in COLUMNS} for r in rows]


def stored_runs(db: Database, job_id: int) -> dict[str, dict[str, Any]]:
    """tracker name -> run record, what a resuming training process continues."""
    return {r["tracker"]: r for r in job_tracker_runs(db, job_id)}


def describe(rec: dict[str, Any]) -> str:
    """One line per run: `wandb kdrun/3x9k2 https://...` / `tensorboard 000001-.../tensorboard`."""
    rec = {k: v for k, v in rec.items() if isinstance(v, str) and v}  # NaN from DataFrames
    where = rec.get("url") or rec.get("path") or ""
    project = f"{rec['project']}/" if rec.get("project") else ""
    return f"{rec['tracker']} {project}{rec['run_id']}" + (
        f" {where}" if where and where != rec["run_id"] else "")


def frame(db: Database, job_ids: list[int] | None = None) -> pd.DataFrame:
    """Every job's tracker runs as a DataFrame (COLUMNS), for reports and `kdrun.api`."""
    import pandas as pd  # here: the worker's supervisor imports this module, not pandas

    q = select(TrackerRun).order_by(TrackerRun.job_id, TrackerRun.tracker)
    with db.read() as s:
        recs = []
        if job_ids is None:
            chunks: list[Any] = [q]
        else:
            chunks = [q.where(TrackerRun.job_id.in_(job_ids[i:i + 500]))
                      for i in range(0, len(job_ids), 500)]
        for chunk in chunks:
            recs += [{c: getattr(r, c) for c in COLUMNS} for r in s.execute(chunk).scalars()]
    return pd.DataFrame(recs, columns=COLUMNS)


def for_child(db: Database, job_id: int, config: dict[str, Any],
              worker_trackers: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """What the supervisor adds to the job message for the training process: the trackers
    (the grid's and the worker's) and, when there are any, the runs to continue, the job's
    label and grid. No database read for a job without trackers."""
    from kdrun.trackers import union

    names = union(config.get("tracker"), worker_trackers)
    if not names:
        return {}
    with db.read() as s:
        job = s.get(Job, job_id)
        label, grid = getattr(job, "label", None), job.grid
        history = [{c: getattr(m, c) for c in EPOCH_FIELDS} for m in s.execute(
            select(EpochMetric).where(EpochMetric.job_id == job_id)
            .order_by(EpochMetric.epoch)).scalars()]
    return {"trackers": names, "tracker_runs": stored_runs(db, job_id), "label": label,
            "grid": grid, "tracker_history": history}
