"""`kdrun export`: jobs, results and per-epoch metrics as plain tables for pandas.

Three tables joined by `job_id`: `jobs` (configuration flattened to columns, state and
provenance), `results` (one row per finished job), `epochs` (one row per job and epoch, loss
components as `loss.<name>` columns, sorted by name). CSV writes one file per table into a
directory; JSON writes one document `{"jobs": [...], "results": [...], "epochs": [...]}`.

`epochs.csv` (millions of rows: 10k jobs x 240 epochs) is streamed from the database a chunk
of jobs at a time and its numbers written with 9 significant digits (`%.9g`): every float32
value exactly (losses and accuracies are computed in float32 or as k/N), a few times faster
than the shortest round-trip repr and a third smaller. `jobs.csv`, `results.csv` and the
JSON keep the shortest repr (0.05, not 0.050000000000000003); `kdrun.api.epochs()` gives the
stored doubles.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.params import flatten
from kdrun.report.epoch_sql import component_names, epoch_select, fetch_rows
from kdrun.report.load import load_epochs, load_jobs

EPOCH_FLOAT = "%.9g"  # epochs.csv: see the module docstring
# NULL as epochs.csv's query reads it, written as an empty field: a number no metric takes
# (a genuine -1e-300 would be written empty), so that every row is formatted as the driver
# returns it, with one %-format and no per-value Python (`csv_rows`)
MISSING = -1e-300
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
    c = Job.config
    parts = {"teacher_arch": c[("teacher", "arch")], "teacher_checkpoint": c[("teacher",
                                                                              "checkpoint")],
             "dataset": c["dataset"], "recipe": c["recipe"], "params": c[("method", "params")]}
    with db.read() as s:
        # Plain columns and only the config parts the table has (JSON text, parsed once per
        # distinct value), not ORM objects: 100k jobs.
        q = select(*[getattr(Job, f) for f in JOB_FIELDS],
                   *[v.as_string().label(f"cfg_{k}") for k, v in parts.items()]).order_by(Job.id)
        if grid:
            q = q.where(Job.grid == grid)
        jobs = s.execute(q).all()
        rq = select(*Result.__table__.columns).order_by(Result.job_id)
        if grid:
            rq = rq.join(Job, Job.id == Result.job_id).where(Job.grid == grid)
        results = s.execute(rq).all()
    flat: dict[tuple[str, str], dict[str, Any]] = {}  # (prefix, JSON text) -> flattened

    def columns(prefix: str, text: str | None) -> dict[str, Any]:
        if (prefix, text) not in flat:
            flat[prefix, text] = {f"{prefix}.{k}": v for k, v in
                                  flatten(json.loads(text) if text else {}).items()}
        return flat[prefix, text]

    job_recs = []
    for j in jobs:
        rec: dict[str, Any] = {("job_id" if f == "id" else f): getattr(j, f) for f in JOB_FIELDS}
        rec["label"] = labels.get(j.id)
        rec["teacher_arch"] = j.cfg_teacher_arch
        rec["teacher_checkpoint"] = j.cfg_teacher_checkpoint
        for prefix in ("dataset", "recipe", "params"):
            rec.update(columns(prefix, getattr(j, f"cfg_{prefix}")))
        job_recs.append(rec)
    res_recs = []
    for r in results:  # the resolved speed switches become columns (switches.amp, ...)
        rec = {f: getattr(r, f) for f in RESULT_FIELDS if f != "switches"}
        rec.update({f"switches.{k}": v for k, v in flatten(r.switches or {}).items()})
        res_recs.append(rec)
    return (pd.DataFrame(job_recs, columns=None if job_recs else ["job_id"]),
            pd.DataFrame(res_recs or None, columns=None if res_recs else RESULT_FIELDS))


def names_soon(db: Database) -> Future[list[str]]:
    """Every epoch row's loss component names, found by a thread: the database scans millions
    of rows for them (1.5 s on 2.4M) without holding the GIL, so `kdrun export` builds the
    jobs table meanwhile."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="kdrun-names")
    future = pool.submit(component_names, db)
    pool.shutdown(wait=False)  # the thread ends with its query
    return future


def write_csv(db: Database, jobs: pd.DataFrame, results: pd.DataFrame, out: Path,
              every_job: bool = False,
              names: Future[list[str]] | None = None) -> tuple[list[Path], int]:
    """jobs.csv, results.csv and epochs.csv (of these jobs, or of all with `every_job`) into
    folder `out`; returns the paths and the number of epoch rows. `names`: `names_soon`
    (with `every_job`)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (("jobs", jobs), ("results", results)):
        path = out / f"{name}.csv"
        # shortest repr that parses back to the same float: 0.05, not 0.050000000000000003
        iso_times(frame).to_csv(path, index=False)
        paths.append(path)
    path = out / "epochs.csv"
    ids = None if every_job else [int(i) for i in jobs.get("job_id", [])]
    comps = names.result() if names is not None and every_job else None
    return [*paths, path], write_epochs_csv(db, ids, path, components=comps)


def write_epochs_csv(db: Database, job_ids: list[int] | None, path: Path,
                     chunk: int = 50_000, components: list[str] | None = None) -> int:
    """The epochs table of these jobs (None: every job) as CSV, streamed `chunk` rows at a
    time, numbers as EPOCH_FLOAT. Returns the number of rows. `components`: the jobs' loss
    component names, when known."""
    names, queries = epoch_select(db, job_ids, missing=MISSING, components=components)
    line = row_format(len(names))
    n = 0
    with path.open("w") as f:
        f.write(",".join(names) + "\n")
        for rows in fetch_rows(db, queries, chunk):
            f.write(csv_rows(rows, line))
            n += len(rows)
    return n


def csv_lines(rows: list[tuple]) -> str:
    """Epoch rows (job_id, epoch, then numbers or None) as CSV lines; None and NaN become
    empty fields, as pandas writes them."""
    filled = [tuple(MISSING if v is None else v for v in r) for r in rows]
    return csv_rows(filled, row_format(len(rows[0]) if rows else 2))


def row_format(width: int) -> str:
    """The %-format of an epoch row of `width` fields: job_id, epoch, then numbers."""
    return ",".join(["%d", "%d", *[EPOCH_FLOAT] * (width - 2)])


def csv_rows(rows: list[tuple], line: str) -> str:
    """Rows without None (the query gave NULL as MISSING) as CSV lines: one %-format per row
    as the driver returned it, no transposing (formatting is most of an export's time);
    MISSING and NaN become empty fields."""
    text = "\n".join(map(line.__mod__, rows)) + "\n"
    # ",nan" and ",-1e-300" are always whole fields: no other number's text begins so
    for gone in (",nan", "," + EPOCH_FLOAT % MISSING):
        if gone in text:
            text = text.replace(gone, ",")
    return text


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
