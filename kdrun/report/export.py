"""`kdrun export`: jobs, results and per-epoch metrics as plain tables for pandas.

Three tables joined by `job_id`: `jobs` (configuration flattened to columns, state and
provenance), `results` (one row per finished job), `epochs` (one row per job and epoch, loss
components as `loss.<name>` columns). CSV writes one file per table into a directory; JSON
writes one document `{"jobs": [...], "results": [...], "epochs": [...]}`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.params import flatten
from kdrun.report.load import load_epochs, load_jobs

JOB_FIELDS = ("id", "hash", "grid", "kind", "dataset", "teacher", "student", "method", "seed",
              "state", "attempts", "max_attempts", "depends_on_id", "priority", "epoch", "error",
              "worker", "run_dir", "created_at", "started_at", "finished_at", "kdrun_version",
              "torch_version", "device_name")
RESULT_FIELDS = tuple(c.name for c in Result.__table__.columns)


def tables(db: Database, grid: str | None = None) -> dict[str, pd.DataFrame]:
    """The three tables: `jobs`, `results`, `epochs` (what `kdrun.api` documents)."""
    jobs, results = jobs_and_results(db, grid)
    return {"jobs": jobs, "results": results, "epochs": load_epochs(db, list(jobs["job_id"]))}


def jobs_and_results(db: Database, grid: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = load_jobs(db).set_index("job_id")["label"]
    with db.read() as s:
        # Plain columns, not ORM objects: rows read like a Job / a Result, much faster.
        q = select(*[getattr(Job, f) for f in JOB_FIELDS], Job.config).order_by(Job.id)
        if grid:
            q = q.where(Job.grid == grid)
        jobs = s.execute(q).all()
        rq = select(*Result.__table__.columns).order_by(Result.job_id)
        if grid:
            rq = rq.join(Job, Job.id == Result.job_id).where(Job.grid == grid)
        results = s.execute(rq).all()
    job_recs = []
    for j in jobs:
        rec: dict[str, Any] = {("job_id" if f == "id" else f): getattr(j, f) for f in JOB_FIELDS}
        rec["label"] = labels.get(j.id)
        t = j.config.get("teacher") or {}
        rec["teacher_arch"] = t.get("arch")
        rec["teacher_checkpoint"] = t.get("checkpoint")
        rec.update({f"dataset.{k}": v for k, v in flatten(j.config["dataset"]).items()})
        rec.update({f"recipe.{k}": v for k, v in flatten(j.config["recipe"]).items()})
        rec.update({f"params.{k}": v for k, v in flatten(j.config["method"]["params"]).items()})
        job_recs.append(rec)
    res_recs = []
    for r in results:  # the resolved speed switches become columns (switches.amp, ...)
        rec = {f: getattr(r, f) for f in RESULT_FIELDS if f != "switches"}
        rec.update({f"switches.{k}": v for k, v in flatten(r.switches or {}).items()})
        res_recs.append(rec)
    return (pd.DataFrame(job_recs, columns=None if job_recs else ["job_id"]),
            pd.DataFrame(res_recs or None, columns=None if res_recs else RESULT_FIELDS))


def write_csv(frames: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in frames.items():
        path = out / f"{name}.csv"
        # shortest repr that parses back to the same float: 0.05, not 0.050000000000000003
        iso_times(frame).to_csv(path, index=False)
        paths.append(path)
    return paths


def iso_times(frame: pd.DataFrame) -> pd.DataFrame:
    """The `*_at` columns (database clock, Unix seconds) as ISO 8601 UTC text for files."""
    cols = [c for c in frame.columns if str(c).endswith("_at")]
    if not cols:
        return frame
    out = frame.copy()
    for c in cols:
        out[c] = [_iso(v) for v in out[c]]
    return out


def _iso(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return None
    return datetime.fromtimestamp(x, tz=timezone.utc).isoformat(timespec="milliseconds")


def to_json(frames: dict[str, pd.DataFrame]) -> str:
    doc = {name: [{k: _plain(v) for k, v in r.items()} for r in iso_times(f).to_dict("records")]
           for name, f in frames.items()}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def _plain(v: object) -> object:
    if hasattr(v, "item"):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v
