"""The job queue: enqueue, atomic claim under a lease, and lease-fenced writes.

Every write a worker makes about a job names the job *and* the lease token it was given at
claim time; when the lease has expired and the job was claimed again (or it was cancelled),
the token no longer matches, the write changes nothing, and the worker gets `LeaseLost`.
Leases are judged by the database clock only. Each function here is one short transaction,
rerun by `retrying` when the database is momentarily locked.
"""

from __future__ import annotations

import itertools
import json
import operator
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from kdrun.db.clock import db_now
from kdrun.db.engine import Database, retrying
from kdrun.db.models import (
    Attempt,
    CheckpointFile,
    EpochMetric,
    Job,
    Result,
    Teacher,
    WorkerSeen,
)
from kdrun.headline import first_line
from kdrun.spec import JobSpec

KEEP_CHECKPOINTS = 2  # epoch checkpoint records per job (kdrun.checkpoints.KEEP)
BACKOFF_S = 30.0  # base delay before a failed or expired job may run again (doubles per attempt)
MAX_HANDBACKS = 20  # times a job may go back to the queue unfinished (stop, time limit, ...)


class LeaseLost(Exception):
    """This worker no longer owns the job: another worker reclaimed it, or it was cancelled."""


@dataclass
class Claim:
    job_id: int
    token: str
    attempt: int
    config: dict[str, Any]
    run_dir: str | None
    teacher_checkpoint: str | None  # the finished teacher job's checkpoint, when there is one
    label: str | None = None  # kdrun.labels.job_label, as chosen at enqueue
    # Recorded checkpoints to resume from, newest first ({"epoch", "path", "sha256"}), and
    # the trained teacher's recorded sha256 (see kdrun.checkpoints).
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    teacher_sha256: str | None = None
    # devices of this machine the worker holds for the job: recipe.gpus (per machine), or all
    # of them for a job across machines (see claim)
    gpus: int = 1


@retrying
def enqueue(db: Database, grid: str, specs: Sequence[JobSpec]) -> tuple[int, int]:
    """Insert the jobs not yet present, all in one transaction: (added, already present).

    Bulk inserts that skip existing hashes (`ON CONFLICT DO NOTHING` on both backends), a
    teacher before the students that wait for it: concurrent enqueues of one grid leave one
    row per job and never fail on the unique index."""
    with db.write() as s:
        now = s.execute(select(db_now())).scalar_one()
        # Jobs others wait for (teachers) need their ids; of the rest it is enough to know
        # that this grid has them (one indexed query). A job another grid queued is skipped
        # by ON CONFLICT below and counted as present.
        hashes = {sp.hash for sp in specs}
        waited_for = {sp.depends_on for sp in specs if sp.depends_on} & hashes
        ids = _ids(s, sorted(waited_for))
        queued = set(s.scalars(select(Job.hash).where(Job.grid == grid)))
        insert_ = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        pending = [sp for sp in specs if sp.hash not in ids and sp.hash not in queued]
        added = 0
        while pending:
            ready = [sp for sp in pending if not sp.depends_on or sp.depends_on in ids]
            if not ready:
                raise ValueError(f"job {pending[0].hash[:12]} depends on a job not in the grid")
            rows = [{"hash": sp.hash, "grid": grid, "kind": sp.kind, "dataset": sp.dataset,
                     "teacher": sp.teacher, "student": sp.student, "method": sp.method,
                     "seed": sp.seed, "config": sp.config,
                     "depends_on_id": ids[sp.depends_on] if sp.depends_on else None,
                     "priority": sp.priority, "state": "queued", "created_at": now,
                     "label": sp.label, "gpus": sp.gpus // sp.nodes, "nodes": sp.nodes}
                    for sp in ready]  # other columns: their defaults
            # Jobs others wait for (teachers) need their ids back; the rest (students, nearly
            # all of a grid) go in without RETURNING, straight through the driver. In grid
            # order, run by run, so ids follow the grid as before.
            for keyed, run in itertools.groupby(rows, key=lambda r: r["hash"] in waited_for):
                run = list(run)
                if not keyed:
                    added += _insert_many(s, run)
                    continue
                stmt = (insert_(Job).on_conflict_do_nothing(index_elements=["hash"])
                        .returning(Job.hash, Job.id))
                got = dict(s.connection().execute(stmt, run).all())
                added += len(got)
                ids.update(got)
                ids.update(_ids(s, [r["hash"] for r in run if r["hash"] not in got]))  # raced in
            done = {sp.hash for sp in ready}
            pending = [sp for sp in pending if sp.hash not in done]
        return added, len(specs) - added


# json.dumps's text (the ORM's JSON columns), without its per-call encoder and cycle check:
# a config was hashed (kdrun.spec, with the check) before it is written
_to_json = json.JSONEncoder(check_circular=False).encode


def _insert_many(s: Session, rows: list[dict[str, Any]]) -> int:
    """Insert job rows, skipping hashes already present; how many were new.

    One compiled statement run by the driver's executemany, with the JSON and the column
    defaults filled here as the ORM fills them: the ORM's per-row parameter handling was
    most of the time of a 100k-job enqueue."""
    if not rows:
        return 0
    conn = s.connection()
    cols = [c for c in Job.__table__.columns if c.name in rows[0] or c.default is not None]
    if any(c.default is not None and not c.default.is_scalar for c in cols):
        raise TypeError("kdrun_jobs has a column default that is not a constant")
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (insert_(Job).values({c.name: bindparam(c.name) for c in cols})
            .on_conflict_do_nothing(index_elements=["hash"]))
    compiled = stmt.compile(dialect=conn.dialect)
    defaults = {c.name: c.default.arg for c in cols if c.default is not None}
    as_json = [c.name for c in cols if isinstance(c.type, JSON)]
    full = []
    for r in rows:
        row = {**defaults, **r}
        for name in as_json:
            row[name] = _to_json(row[name])  # as the ORM writes it (None: JSON null)
        full.append(row)
    if compiled.positional:
        values = operator.itemgetter(*(compiled.positiontup or []))
        full = [values(row) for row in full]  # type: ignore[misc]
    return conn.exec_driver_sql(compiled.string, full).rowcount


def _ids(s: Session, hashes: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for i in range(0, len(hashes), 500):
        chunk = list(hashes[i : i + 500])
        ids.update(s.execute(select(Job.hash, Job.id).where(Job.hash.in_(chunk))).all())
    return ids


def _runnable() -> ColumnElement[bool]:
    dep = aliased(Job)
    ready = or_(
        Job.depends_on_id.is_(None),
        exists().where(and_(dep.id == Job.depends_on_id, dep.state == "succeeded")),
    )
    return and_(Job.state == "queued", Job.not_before <= db_now(), ready)


def _skip_locked(s: Session, q):
    """On PostgreSQL, lock the rows we pick and pass over rows another claimer holds (SQLite
    has no row locks: BEGIN IMMEDIATE already made this transaction the only writer)."""
    if s.get_bind().dialect.name == "postgresql":
        return q.with_for_update(skip_locked=True, of=Job)
    return q


def _backoff(backoff_s: float, attempt: int):
    """When a job that failed (or whose worker vanished) on attempt n may run again: the
    back-off doubles with every attempt used."""
    return db_now() + backoff_s * 2 ** max(attempt - 1, 0)


def reap(s: Session, backoff_s: float = BACKOFF_S) -> tuple[int, int]:
    """Take back jobs whose lease expired: queued again after a back-off, or failed when they
    have used all their attempts. Runs inside every claim (and `kdrun reap`).
    Returns (requeued, failed)."""
    expired = _skip_locked(s, select(Job.id, Job.lease_token, Job.attempts, Job.max_attempts)
                           .where(Job.state == "running", Job.lease_expires_at < db_now()))
    requeued = failed = 0
    for job_id, token, attempts, max_attempts in s.execute(expired).all():
        why = f"lease expired on attempt {attempts}/{max_attempts}: the worker died or hung"
        if attempts >= max_attempts:
            values = {"state": "failed", "finished_at": db_now()}
            failed += 1
        else:
            values = {"state": "queued", "not_before": _backoff(backoff_s, attempts)}
            requeued += 1
        s.execute(update(Job).where(Job.id == job_id, Job.lease_token == token)
                  .values(lease_token=None, lease_expires_at=None, progress=None, error=why,
                          **values))
        _end_attempt(s, token, "expired", why)
    return requeued, failed


@retrying
def reap_expired(db: Database, backoff_s: float = BACKOFF_S) -> tuple[int, int]:
    with db.write() as s:
        return reap(s, backoff_s)


@retrying
def claim(db: Database, worker: str | Callable[[int], str], lease_seconds: float,
          backoff_s: float = BACKOFF_S, idle: int = 1, capacity: int = 1,
          nodes: int = 1) -> Claim | None:
    """Atomically take the next runnable job (teachers first), or None when there is none.

    A worker with `capacity` devices, `idle` of them free now, considers only the jobs that
    fit its capacity (`gpus <= capacity`), and takes the first of them only when it fits its
    idle devices: while a wide job is first in line, no narrower one overtakes it here, so
    freed devices gather until it fits (no starvation). `worker` may be a function of the
    job's gpus giving the name to record (a group job's name lists its devices). Counts are
    per machine: `gpus` is a job's devices on each of its `nodes` machines, and only a worker
    whose Slurm allocation spans `nodes` machines or more (`nodes` here) takes it. Such a job
    holds every device of the worker's machine: its srun step gets GPUs there from Slurm,
    which does not know which ones the worker's other jobs train on."""
    with db.write() as s:  # BEGIN IMMEDIATE on SQLite: claimers serialize here
        reap(s, backoff_s)
        q = (select(Job.id, Job.gpus, Job.nodes).where(_runnable(), Job.gpus <= capacity,
                                                       Job.nodes <= nodes)
             .order_by(Job.priority.desc(), Job.id).limit(1))
        first = s.execute(_skip_locked(s, q)).first()
        if first is None:
            return None
        units = capacity if first.nodes > 1 else first.gpus
        if units > idle:
            return None
        job_id = first.id
        if callable(worker):
            worker = worker(units)
        token = secrets.token_hex(16)
        n = s.execute(
            update(Job).where(Job.id == job_id, Job.state == "queued")
            .values(state="running", worker=worker, lease_token=token,
                    lease_expires_at=db_now() + lease_seconds, heartbeat_at=db_now(),
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, db_now()),
                    error=None, progress=None)
        ).rowcount
        if n != 1:
            return None
        job = s.get(Job, job_id)
        s.add(Attempt(job_id=job_id, number=job.attempts, worker=worker, lease_token=token,
                      started_at=db_now()))
        ckpt = teacher_sha = None
        if job.depends_on_id is not None:
            ckpt, teacher_sha = s.execute(
                select(Result.checkpoint, Result.sha256).where(Result.job_id == job.depends_on_id)
            ).first() or (None, None)
        return Claim(job_id, token, job.attempts, job.config, job.run_dir, ckpt, job.label,
                     checkpoint_records(s, job_id), teacher_sha, units)


def _fence(s: Session, c: Claim, **values: Any) -> None:
    """Update our job only while we still hold its lease; otherwise raise LeaseLost."""
    n = s.execute(
        update(Job).where(Job.id == c.job_id, Job.lease_token == c.token, Job.state == "running")
        .values(**values)
    ).rowcount
    if n != 1:
        raise LeaseLost(f"job {c.job_id}: lease {c.token[:8]} is no longer held")


def _end_attempt(s: Session, token: str, outcome: str, error: str | None = None) -> None:
    s.execute(update(Attempt).where(Attempt.lease_token == token, Attempt.outcome.is_(None))
              .values(outcome=outcome, ended_at=db_now(), error=error))


@retrying
def heartbeat(db: Database, c: Claim, lease_seconds: float) -> None:
    """Extend the lease to `lease_seconds` from now (database clock)."""
    with db.write() as s:
        _fence(s, c, lease_expires_at=db_now() + lease_seconds, heartbeat_at=db_now())


@retrying
def set_run_dir(db: Database, c: Claim, run_dir: str) -> None:
    with db.write() as s:
        _fence(s, c, run_dir=run_dir)


@retrying
def set_provenance(db: Database, c: Claim, provenance: dict[str, str]) -> None:
    """kdrun and torch versions and the device name of the process that trains the job."""
    with db.write() as s:
        _fence(s, c, **provenance)


@retrying
def record_epoch(db: Database, c: Claim, row: dict[str, Any], progress: dict[str, Any],
                 checkpoint: dict[str, Any] | None = None) -> list[str]:
    """Store one epoch's metrics (replacing any from an interrupted earlier attempt) and the
    checkpoint file the training process wrote for it, keeping the newest `KEEP` records.
    Returns the paths of the records dropped, for the caller to delete."""
    with db.write() as s:
        _fence(s, c, epoch=row["epoch"], progress=progress)
        s.execute(delete(EpochMetric).where(EpochMetric.job_id == c.job_id,
                                            EpochMetric.epoch >= row["epoch"]))
        s.execute(insert(EpochMetric).values(job_id=c.job_id, **row))
        if checkpoint is None:
            return []
        new_id = s.execute(insert(CheckpointFile).values(
            job_id=c.job_id, epoch=checkpoint["epoch"], path=checkpoint["path"],
            sha256=checkpoint["sha256"], lease_token=c.token, created_at=db_now())
        ).inserted_primary_key[0]
        rows = s.execute(select(CheckpointFile.id, CheckpointFile.epoch, CheckpointFile.path)
                         .where(CheckpointFile.job_id == c.job_id, CheckpointFile.id != new_id)
                         .order_by(CheckpointFile.epoch.desc(), CheckpointFile.id.desc())).all()
        # Records of this epoch or later predate a resume that fell back: superseded.
        dropped = [r for r in rows if r.epoch >= checkpoint["epoch"]]
        dropped += [r for r in rows if r.epoch < checkpoint["epoch"]][KEEP_CHECKPOINTS - 1:]
        if dropped:
            s.execute(delete(CheckpointFile).where(CheckpointFile.id.in_([r.id for r in dropped])))
        return [r.path for r in dropped]


def checkpoint_records(s: Session, job_id: int) -> list[dict[str, Any]]:
    """The job's recorded checkpoints, newest first."""
    rows = s.execute(select(CheckpointFile.epoch, CheckpointFile.path, CheckpointFile.sha256)
                     .where(CheckpointFile.job_id == job_id)
                     .order_by(CheckpointFile.epoch.desc(), CheckpointFile.id.desc())).all()
    return [{"epoch": e, "path": p, "sha256": h} for e, p, h in rows]


@retrying
def checkpoint_notice(db: Database, c: Claim, notice: str, bad: Sequence[str]) -> None:
    """A resume skipped damaged checkpoints: say so on the job and forget those records."""
    with db.write() as s:
        _fence(s, c, notice=notice)
        if bad:
            s.execute(delete(CheckpointFile).where(CheckpointFile.job_id == c.job_id,
                                                   CheckpointFile.path.in_(list(bad))))


@retrying
def succeed(db: Database, c: Claim, result: dict[str, Any],
            teacher: dict[str, Any] | None) -> str | None:
    """Mark the job done with its result; a trained teacher also enters the registry.
    Returns the newest epoch checkpoint's path, the one record kept."""
    with db.write() as s:
        _fence(s, c, state="succeeded", finished_at=db_now(), lease_token=None,
               lease_expires_at=None, progress=None)
        s.execute(delete(Result).where(Result.job_id == c.job_id))
        s.execute(insert(Result).values(job_id=c.job_id, **result))
        _end_attempt(s, c.token, "succeeded")
        # Of the epoch checkpoints, only the newest stays recorded (and on disk).
        newest = s.execute(select(CheckpointFile.id, CheckpointFile.path)
                           .where(CheckpointFile.job_id == c.job_id)
                           .order_by(CheckpointFile.epoch.desc(), CheckpointFile.id.desc())
                           .limit(1)).first()
        s.execute(delete(CheckpointFile).where(CheckpointFile.job_id == c.job_id,
                                               CheckpointFile.id != (newest.id if newest else -1)))
        if teacher is not None and s.execute(
            select(Teacher.id).where(Teacher.name == teacher["name"])
        ).first() is None:
            s.execute(insert(Teacher).values(job_id=c.job_id, created_at=db_now(), **teacher))
        return newest.path if newest else None


@retrying
def fail(db: Database, c: Claim, error: str, *, retry: bool, backoff_s: float = BACKOFF_S) -> str:
    """Record a failed attempt: back to the queue with back-off while attempts remain and the
    error is retryable, else failed. Returns the job's new state."""
    with db.write() as s:
        attempts, max_attempts = s.execute(
            select(Job.attempts, Job.max_attempts).where(Job.id == c.job_id)).one()
        if retry and attempts < max_attempts:
            values = {"state": "queued", "not_before": _backoff(backoff_s, attempts)}
        else:
            values = {"state": "failed", "finished_at": db_now()}
        _fence(s, c, error=error, lease_token=None, lease_expires_at=None, progress=None,
               **values)
        _end_attempt(s, c.token, "failed", error)
        return values["state"]


@retrying
def requeue(db: Database, c: Claim, reason: str) -> str:
    """Give the job back without using up an attempt and without back-off (a worker stopping,
    a time limit, a pre-emption). A job handed back more than MAX_HANDBACKS times fails, so
    one that can never finish inside a time limit does not loop forever. Returns the job's
    new state."""
    with db.write() as s:
        handbacks = s.execute(select(Job.handbacks).where(Job.id == c.job_id)).scalar() or 0
        if handbacks >= MAX_HANDBACKS:
            why = (f"handed back {handbacks + 1} times without finishing (last: {reason}); "
                   "a time limit or pre-emption keeps cutting it: give its workers more time, "
                   "then `kdrun retry` it")
            _fence(s, c, state="failed", error=why, finished_at=db_now(), lease_token=None,
                   lease_expires_at=None, progress=None, attempts=Job.attempts - 1)
            _end_attempt(s, c.token, "failed", why)
            return "failed"
        _fence(s, c, state="queued", lease_token=None, lease_expires_at=None, progress=None,
               attempts=Job.attempts - 1, handbacks=Job.handbacks + 1)
        _end_attempt(s, c.token, "requeued", reason)
        return "queued"


def select_jobs(ids: Sequence[int] = (), grid: str | None = None) -> ColumnElement[bool]:
    """The jobs named by id and/or grid; every job when neither is given."""
    conds = []
    if ids:
        conds.append(Job.id.in_(list(ids)))
    if grid:
        conds.append(Job.grid == grid)
    return and_(true(), *conds)


@retrying
def cancel(db: Database, which: ColumnElement[bool]) -> int:
    """Cancel queued and running jobs. A running job's worker learns it at its next fenced
    write (heartbeat at the latest) and stops its training process."""
    with db.write() as s:
        live = and_(which, Job.state.in_(("queued", "running")))
        tokens = [t for (t,) in s.execute(select(Job.lease_token).where(live)) if t]
        n = s.execute(update(Job).where(live).values(
            state="cancelled", lease_token=None, lease_expires_at=None, progress=None,
            finished_at=db_now())).rowcount
        for token in tokens:
            _end_attempt(s, token, "cancelled", "cancelled by `kdrun cancel`")
        return n


@retrying
def retry(db: Database, which: ColumnElement[bool]) -> int:
    """Failed and cancelled jobs back to the queue with a fresh set of attempts. A job resumes
    from its last checkpoint; delete its run directory to start it over."""
    with db.write() as s:
        return s.execute(update(Job).where(which, Job.state.in_(("failed", "cancelled"))).values(
            state="queued", attempts=0, handbacks=0, not_before=0.0, error=None,
            finished_at=None)).rowcount


def counts(db: Database) -> dict[str, int]:
    with db.read() as s:
        rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {state: n for state, n in rows}


def has_runnable_or_running(db: Database, capacity: int | None = None, nodes: int = 1) -> bool:
    """Whether waiting can still produce work: something runnable later, or running now.
    With `capacity` (a worker's device count), jobs wider than it, and jobs waiting on such a
    queued job, cannot run here and do not count; so do jobs over more machines than `nodes`."""
    with db.read() as s:
        dep = aliased(Job)
        never = dep.state.in_(("failed", "cancelled"))
        if capacity is not None:
            never = or_(never, and_(dep.state == "queued",
                                    or_(dep.gpus > capacity, dep.nodes > nodes)))
        blocked_forever = exists().where(and_(dep.id == Job.depends_on_id, never))
        queued = and_(Job.state == "queued", ~blocked_forever)
        if capacity is not None:
            queued = and_(queued, Job.gpus <= capacity, Job.nodes <= nodes)
        q = select(Job.id).where(or_(Job.state == "running", queued)).limit(1)
        return s.execute(q).first() is not None


def has_waiting(db: Database, capacity: int = 1, nodes: int = 1) -> bool:
    """Whether a job this worker could run is queued (runnable now or later, dependencies
    aside): worth starting a training process ahead for."""
    with db.read() as s:
        q = select(Job.id).where(Job.state == "queued", Job.gpus <= capacity,
                                 Job.nodes <= nodes).limit(1)
        return s.execute(q).first() is not None


WORKERS_SEEN_S = 86400.0  # a worker not seen for this long no longer counts (kdrun_workers)


@retrying
def worker_seen(db: Database, name: str, units: int) -> None:
    """Record that worker `name` (host:pid) with `units` devices is alive now, and forget
    workers not seen for WORKERS_SEEN_S."""
    with db.write() as s:
        now = s.execute(select(db_now())).scalar_one()
        insert_ = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        s.execute(insert_(WorkerSeen).values(name=name, units=units, seen_at=now)
                  .on_conflict_do_update(index_elements=["name"],
                                         set_={"units": units, "seen_at": now}))
        s.execute(delete(WorkerSeen).where(WorkerSeen.seen_at < now - WORKERS_SEEN_S))


def too_wide(db: Database, units: int | None = None,
             grid: str | None = None) -> tuple[int | None, list[tuple[int, int]]]:
    """Queued jobs that need more devices than `units` (default: the largest worker seen in
    the last WORKERS_SEEN_S; none when no worker was seen): (units, [(job id, gpus)])."""
    with db.read() as s:
        if units is None:
            units = s.execute(select(func.max(WorkerSeen.units)).where(
                WorkerSeen.seen_at >= db_now() - WORKERS_SEEN_S)).scalar()
            if units is None:
                return None, []
        widest = s.execute(select(func.max(Job.gpus))).scalar()  # one index probe
        if widest is None or widest <= units:
            return units, []  # the usual answer, without reading the queue
        q = select(Job.id, Job.gpus).where(Job.gpus > units, Job.state == "queued")
        if grid:
            q = q.where(Job.grid == grid)
        return units, [(i, g) for i, g in s.execute(q.order_by(Job.id)).all()]


def too_many_nodes(db: Database, nodes: int) -> list[tuple[int, int]]:
    """Queued jobs over more machines than `nodes` (a worker's allocation): [(job id, nodes)]."""
    with db.read() as s:
        q = select(Job.id, Job.nodes).where(Job.nodes > nodes, Job.state == "queued")
        return [(i, n) for i, n in s.execute(q.order_by(Job.id)).all()]


def too_wide_text(wide: Sequence[tuple[int, int]], units: int,
                  whose: str = "the largest worker seen", limit: int = 3) -> str:
    """`job 12 needs 4 GPUs; the largest worker seen has 2` (a few jobs named, others
    counted)."""
    named = ", ".join(f"job {i} needs {g} GPUs" for i, g in wide[:limit])
    more = f" (and {len(wide) - limit} more)" if len(wide) > limit else ""
    return f"{named}{more}; {whose} has {units}"


DEAD = ("failed", "cancelled")  # a job that depends on one of these can never run


@dataclass
class Blocker:
    """A failed or cancelled job that queued jobs depend on: they can never run until
    `kdrun retry <job_id>` puts it back."""

    job_id: int
    label: str
    state: str
    error: str  # the first line of its error
    blocked: list[int]  # the ids of the queued jobs waiting on it


def _dead_dependency(grid: str | None):
    dep = aliased(Job)
    q = (select(Job.id, dep.id).join(dep, dep.id == Job.depends_on_id)
         .where(Job.state == "queued", dep.state.in_(DEAD)))
    return q.where(Job.grid == grid) if grid else q


def blockers(db: Database, grid: str | None = None) -> list[Blocker]:
    """The failed or cancelled jobs that strand queued jobs (of `grid`), with those jobs."""
    from kdrun.labels import job_label

    with db.read() as s:
        waiting: dict[int, list[int]] = {}
        for job_id, dep_id in s.execute(_dead_dependency(grid)).all():
            waiting.setdefault(dep_id, []).append(job_id)
        if not waiting:
            return []
        rows = s.execute(select(Job.id, Job.label, Job.config, Job.state, Job.error)
                         .where(Job.id.in_(list(waiting))).order_by(Job.id)).all()
    return [Blocker(i, label or job_label(config), state, first_line(error) or state,
                    sorted(waiting[i])) for i, label, config, state, error in rows]

