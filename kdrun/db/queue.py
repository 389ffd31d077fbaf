"""The job queue: enqueue, atomic claim under a lease, and lease-fenced writes.

Every write a worker makes about a job names the job *and* the lease token it was given at
claim time; when the lease has expired and the job was claimed again, the token no longer
matches, the write changes nothing, and the worker gets `LeaseLost`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from kdrun.db.clock import db_now
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, EpochMetric, Job, Result, Teacher
from kdrun.spec import JobSpec

BACKOFF_S = 30.0  # base delay before a failed or expired job may run again (doubles per attempt)


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


def enqueue(db: Database, grid: str, specs: Sequence[JobSpec]) -> tuple[int, int]:
    """Insert the jobs not yet present, all in one transaction: (added, already present)."""
    with db.write() as s:
        hashes = [sp.hash for sp in specs]
        ids: dict[str, int] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            ids.update(s.execute(select(Job.hash, Job.id).where(Job.hash.in_(chunk))).all())
        present = len(ids)
        for sp in specs:
            if sp.hash in ids:
                continue
            row = Job(
                hash=sp.hash, grid=grid, kind=sp.kind, dataset=sp.dataset, teacher=sp.teacher,
                student=sp.student, method=sp.method, seed=sp.seed, config=sp.config,
                depends_on_id=ids[sp.depends_on] if sp.depends_on else None,
                priority=sp.priority, state="queued", created_at=db_now(),
            )
            s.add(row)
            s.flush()
            ids[sp.hash] = row.id
        return len(specs) - present, present


def _runnable(s: Session):
    dep = aliased(Job)
    ready = or_(
        Job.depends_on_id.is_(None),
        exists().where(and_(dep.id == Job.depends_on_id, dep.state == "succeeded")),
    )
    return and_(Job.state == "queued", Job.not_before <= db_now(), ready)


def reap(s: Session) -> int:
    """Return jobs whose lease expired to the queue with back-off, or fail them when out of
    attempts. Runs inside every claim (and `kdrun reap`)."""
    expired = and_(Job.state == "running", Job.lease_expires_at < db_now())
    tokens = [t for (t,) in s.execute(select(Job.lease_token).where(expired))]
    if not tokens:
        return 0
    s.execute(
        update(Attempt).where(Attempt.lease_token.in_(tokens), Attempt.outcome.is_(None))
        .values(outcome="expired", ended_at=db_now(), error="lease expired (worker lost)")
    )
    s.execute(
        update(Job).where(expired, Job.attempts >= Job.max_attempts)
        .values(state="failed", lease_token=None, finished_at=db_now(),
                error="lease expired on the last attempt: the worker died or hung")
    )
    s.execute(
        update(Job).where(expired)
        .values(state="queued", lease_token=None, lease_expires_at=None,
                not_before=db_now() + BACKOFF_S * func.power(2, Job.attempts - 1))
    )
    return len(tokens)


def claim(db: Database, worker: str, lease_seconds: float) -> Claim | None:
    """Atomically take the next runnable job (teachers first), or None when there is none."""
    with db.write() as s:  # BEGIN IMMEDIATE on SQLite: claimers serialize here
        reap(s)
        q = select(Job.id).where(_runnable(s)).order_by(Job.priority.desc(), Job.id).limit(1)
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        job_id = s.execute(q).scalar()
        if job_id is None:
            return None
        token = secrets.token_hex(16)
        n = s.execute(
            update(Job).where(Job.id == job_id, Job.state == "queued")
            .values(state="running", worker=worker, lease_token=token,
                    lease_expires_at=db_now() + lease_seconds, heartbeat_at=db_now(),
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, db_now()),
                    error=None)
        ).rowcount
        if n != 1:
            return None
        job = s.get(Job, job_id)
        s.add(Attempt(job_id=job_id, number=job.attempts, worker=worker, lease_token=token,
                      started_at=db_now()))
        ckpt = None
        if job.depends_on_id is not None:
            ckpt = s.execute(
                select(Result.checkpoint).where(Result.job_id == job.depends_on_id)
            ).scalar()
        return Claim(job_id, token, job.attempts, job.config, job.run_dir, ckpt)


def _fence(s: Session, c: Claim, **values: Any) -> None:
    """Update our job only while we still hold its lease; otherwise raise LeaseLost."""
    n = s.execute(
        update(Job).where(Job.id == c.job_id, Job.lease_token == c.token, Job.state == "running")
        .values(**values)
    ).rowcount
    if n != 1:
        raise LeaseLost(f"job {c.job_id}: lease {c.token[:8]} is no longer held")


def heartbeat(db: Database, c: Claim, lease_seconds: float) -> None:
    with db.write() as s:
        _fence(s, c, lease_expires_at=db_now() + lease_seconds, heartbeat_at=db_now())


def set_run_dir(db: Database, c: Claim, run_dir: str, provenance: dict[str, str]) -> None:
    with db.write() as s:
        _fence(s, c, run_dir=run_dir, **provenance)


def record_epoch(db: Database, c: Claim, row: dict[str, Any], progress: dict[str, Any]) -> None:
    """Store one epoch's metrics (replacing any from an interrupted earlier attempt)."""
    with db.write() as s:
        _fence(s, c, epoch=row["epoch"], progress=progress)
        s.execute(delete(EpochMetric).where(EpochMetric.job_id == c.job_id,
                                            EpochMetric.epoch >= row["epoch"]))
        s.execute(insert(EpochMetric).values(job_id=c.job_id, **row))


def _end_attempt(s: Session, c: Claim, outcome: str, error: str | None = None) -> None:
    s.execute(update(Attempt).where(Attempt.lease_token == c.token)
              .values(outcome=outcome, ended_at=db_now(), error=error))


def succeed(db: Database, c: Claim, result: dict[str, Any], teacher: dict[str, Any] | None) -> None:
    """Mark the job done with its result; a trained teacher also enters the registry."""
    with db.write() as s:
        _fence(s, c, state="succeeded", finished_at=db_now(), lease_token=None,
               lease_expires_at=None, progress=None)
        s.execute(delete(Result).where(Result.job_id == c.job_id))
        s.execute(insert(Result).values(job_id=c.job_id, **result))
        _end_attempt(s, c, "succeeded")
        if teacher is not None and s.execute(
            select(Teacher.id).where(Teacher.name == teacher["name"])
        ).first() is None:
            s.execute(insert(Teacher).values(job_id=c.job_id, created_at=db_now(), **teacher))


def fail(db: Database, c: Claim, error: str, *, retry: bool) -> str:
    """Record a failed attempt: back to the queue with back-off while attempts remain and the
    error is retryable, else failed. Returns the new state."""
    with db.write() as s:
        job = s.get(Job, c.job_id)
        again = retry and job is not None and job.attempts < job.max_attempts
        state = "queued" if again else "failed"
        extra = {"not_before": db_now() + BACKOFF_S * 2 ** (c.attempt - 1)} if again else {
            "finished_at": db_now()}
        _fence(s, c, state=state, error=error, lease_token=None, lease_expires_at=None,
               progress=None, **extra)
        _end_attempt(s, c, "failed", error)
        return state


def requeue(db: Database, c: Claim, reason: str) -> None:
    """Give the job back without using up an attempt (graceful shutdown)."""
    with db.write() as s:
        _fence(s, c, state="queued", lease_token=None, lease_expires_at=None, progress=None,
               attempts=Job.attempts - 1)
        _end_attempt(s, c, "requeued", reason)


def counts(db: Database) -> dict[str, int]:
    with db.read() as s:
        rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {state: n for state, n in rows}


def has_runnable_or_running(db: Database) -> bool:
    """Whether waiting can still produce work: something runnable later, or running now."""
    with db.read() as s:
        dep = aliased(Job)
        blocked_forever = exists().where(and_(dep.id == Job.depends_on_id,
                                              dep.state.in_(("failed", "cancelled"))))
        q = select(Job.id).where(or_(Job.state == "running",
                                     and_(Job.state == "queued", ~blocked_forever))).limit(1)
        return s.execute(q).first() is not None
