"""The queue under concurrency, on SQLite and PostgreSQL: atomic claims, exactly-once drains,
lease fencing, reaping with back-off, and waiting out a locked SQLite database.

Worker processes here are simulated at the queue level (claim -> heartbeat -> metrics ->
succeed with a fake result), so hundreds of jobs drain in seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from sqlalchemy import func, select, text, update

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, EpochMetric, Job, Result
from kdrun.spec import JobSpec

ROW = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "components": {"ce": 1.0}, "train_top1": 50.0,
       "test_top1": 50.0, "test_top5": 90.0, "val_top1": None, "epoch_time_s": 0.1,
       "images_per_s": 100.0}
RESULT = {"best_top1": 50.0, "best_top5": 90.0, "best_epoch": 1, "last_top1": 50.0,
          "last_top5": 90.0, "last5_top1": 50.0, "selection_split": "test", "wall_time_s": 0.1,
          "images_per_s": 100.0}


def spec(seed: int) -> JobSpec:
    return JobSpec("student", {
        "kind": "student", "dataset": {"name": "synthetic", "num_classes": 4},
        "recipe": {"epochs": 1}, "student": "resnet8", "teacher": None,
        "method": {"name": "vanilla", "params": {}}, "seed": seed})


def make_queue(url: str, jobs: int, max_attempts: int = 3) -> Database:
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec(i) for i in range(jobs)])
    with db.write() as s:
        s.execute(update(Job).values(max_attempts=max_attempts))
    return db


def in_processes(target, args: list[tuple]) -> list:
    """Run target(barrier, results, *a) in one spawned process per args tuple, all starting
    together; returns what each put on `results`."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(barrier, results, *a)) for a in args]
    for p in procs:
        p.start()
    out = []
    while len(out) < len(procs):
        try:
            out.append(results.get(timeout=1))
        except queue_mod.Empty:
            codes = [p.exitcode for p in procs]
            assert all(c in (None, 0) for c in codes), f"a process crashed: exit codes {codes}"
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return out


def _claimer(barrier, results, url: str, name: str) -> None:
    db = Database(url)
    barrier.wait()
    got = []
    while (c := queue.claim(db, name, lease_seconds=600)) is not None:
        got.append(c.job_id)
    results.put(got)


def _drainer(barrier, results, url: str, name: str) -> None:
    """A worker that crashes (walks away holding a lease shortened to 0.5 s, so the test need
    not wait long) on the first attempt of every tenth job, and otherwise runs the job's
    lifecycle to success."""
    db = Database(url)
    barrier.wait()
    got = []
    while True:
        c = queue.claim(db, name, lease_seconds=120, backoff_s=0.0)
        if c is None:
            if not queue.has_runnable_or_running(db):
                break
            time.sleep(0.05)
            continue
        got.append((c.job_id, c.attempt))
        if c.job_id % 10 == 0 and c.attempt == 1:
            queue.heartbeat(db, c, 0.5)
            continue
        queue.heartbeat(db, c, 120)
        queue.record_epoch(db, c, ROW, {"epoch": 1, "epochs": 1})
        queue.succeed(db, c, RESULT, None)
    results.put(got)


def test_racing_claimers_never_claim_a_job_twice(db_url):
    db = make_queue(db_url, jobs=300)
    claimed = [j for got in in_processes(_claimer, [(db_url, f"w{i}") for i in range(4)])
               for j in got]
    assert sorted(claimed) == list(range(1, 301))  # each job exactly once, none missed
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 300
        assert set(s.scalars(select(Job.attempts))) == {1}


def test_four_workers_drain_240_jobs_exactly_once_despite_crashes(db_url):
    db = make_queue(db_url, jobs=240)
    runs = [r for got in in_processes(_drainer, [(db_url, f"w{i}") for i in range(4)])
            for r in got]
    assert len(runs) == len(set(runs)) == 240 + 24  # 24 crashed first attempts, rerun once
    assert queue.counts(db) == {"succeeded": 240}
    with db.read() as s:
        wins = Counter(s.scalars(select(Attempt.job_id).where(Attempt.outcome == "succeeded")))
        assert len(wins) == 240 and set(wins.values()) == {1}
        outcomes = Counter(s.scalars(select(Attempt.outcome)))
        assert outcomes == {"succeeded": 240, "expired": 24}
        assert s.scalar(select(func.count()).select_from(Result)) == 240
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 240
        crashed = s.execute(select(Job.id, Job.attempts).where(Job.attempts > 1)).all()
        assert sorted(crashed) == [(i, 2) for i in range(10, 241, 10)]


def test_worker_whose_lease_was_taken_over_cannot_write(db_url):
    db = make_queue(db_url, jobs=1)
    stale = queue.claim(db, "A", lease_seconds=0.2, backoff_s=0.0)
    time.sleep(0.4)
    fresh = queue.claim(db, "B", lease_seconds=60, backoff_s=0.0)  # reaps A's lease, reclaims
    assert fresh.job_id == stale.job_id and fresh.attempt == 2

    writes = [
        lambda: queue.heartbeat(db, stale, 60),
        lambda: queue.set_run_dir(db, stale, "elsewhere"),
        lambda: queue.set_provenance(db, stale, {"device_name": "stale"}),
        lambda: queue.record_epoch(db, stale, ROW, {"epoch": 1}),
        lambda: queue.succeed(db, stale, RESULT, None),
        lambda: queue.fail(db, stale, "boom", retry=True),
        lambda: queue.fail(db, stale, "boom", retry=False),
        lambda: queue.requeue(db, stale, "stop"),
    ]
    for write in writes:
        with pytest.raises(queue.LeaseLost):
            write()
    with db.read() as s:
        job = s.get(Job, fresh.job_id)
        assert (job.state, job.worker, job.lease_token, job.attempts) == (
            "running", "B", fresh.token, 2)
        assert job.run_dir is None and job.device_name is None and job.error is None
        assert s.scalar(select(func.count()).select_from(Result)) == 0
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 0
        assert dict(s.execute(select(Attempt.worker, Attempt.outcome)).all()) == {
            "A": "expired", "B": None}
    queue.succeed(db, fresh, RESULT, None)
    assert queue.counts(db) == {"succeeded": 1}


def test_expired_lease_backs_off_then_fails_when_out_of_attempts(db_url):
    db = make_queue(db_url, jobs=1, max_attempts=2)
    queue.claim(db, "A", lease_seconds=0.2)
    time.sleep(0.4)
    assert queue.reap_expired(db, backoff_s=60) == (1, 0)
    with db.read() as s:
        job = s.get(Job, 1)
        now = s.execute(select(func.max(Attempt.ended_at))).scalar()
        assert job.state == "queued" and job.not_before > now + 50
        assert "lease expired on attempt 1/2" in job.error
    assert queue.claim(db, "B", 60) is None  # still backing off
    with db.write() as s:
        s.execute(update(Job).values(not_before=0))
    assert queue.claim(db, "B", lease_seconds=0.2).attempt == 2
    time.sleep(0.4)
    assert queue.claim(db, "C", 60) is None  # the claim itself reaps: out of attempts
    assert queue.counts(db) == {"failed": 1}
    assert not queue.has_runnable_or_running(db)


def test_failures_retry_with_backoff_until_attempts_run_out(db_url):
    db = make_queue(db_url, jobs=2, max_attempts=2)
    c = queue.claim(db, "w", 60, backoff_s=0)
    assert queue.fail(db, c, "RuntimeError: flaky", retry=True, backoff_s=0) == "queued"
    c = queue.claim(db, "w", 60, backoff_s=0)
    assert c.attempt == 2
    assert queue.fail(db, c, "RuntimeError: flaky", retry=True) == "failed"  # last attempt
    c = queue.claim(db, "w", 60)
    assert queue.fail(db, c, "ConfigError: bad", retry=False) == "failed"  # at once
    with db.read() as s:
        assert [(j.state, j.attempts, j.error) for j in s.scalars(select(Job).order_by(Job.id))] \
            == [("failed", 2, "RuntimeError: flaky"), ("failed", 1, "ConfigError: bad")]


def test_requeue_gives_the_attempt_back(db_url):
    db = make_queue(db_url, jobs=1, max_attempts=1)
    for _ in range(3):  # stopping gracefully never uses up the only attempt
        c = queue.claim(db, "w", 60)
        assert c.attempt == 1
        queue.requeue(db, c, "SIGTERM")
    with db.read() as s:
        assert s.get(Job, 1).attempts == 0
        assert list(s.scalars(select(Attempt.outcome))) == ["requeued"] * 3


def test_cancel_fences_the_running_worker_and_retry_requeues(db_url):
    db = make_queue(db_url, jobs=3)
    c = queue.claim(db, "w", 60)
    assert queue.cancel(db, queue.select_jobs([1, 2])) == 2
    with pytest.raises(queue.LeaseLost):
        queue.heartbeat(db, c, 60)
    assert queue.counts(db) == {"cancelled": 2, "queued": 1}
    c3 = queue.claim(db, "w", 60)
    assert queue.fail(db, c3, "boom", retry=False) == "failed"
    assert queue.retry(db, queue.select_jobs(grid="g")) == 3
    with db.read() as s:
        assert {(j.state, j.attempts, j.error) for j in s.scalars(select(Job))} == {
            ("queued", 0, None)}
        assert Counter(s.scalars(select(Attempt.outcome))) == {"cancelled": 1, "failed": 1}


def test_sqlite_write_waits_out_a_lock_held_past_the_busy_timeout(tmp_path):
    path = tmp_path / "k.db"
    make_queue(f"sqlite:///{path}", jobs=1)
    db = Database(f"sqlite:///{path}", busy_timeout_s=0.05)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock for 0.6 s
    release = threading.Timer(0.6, holder.rollback)
    release.start()
    t0 = time.monotonic()
    c = queue.claim(db, "w", 60)
    assert c is not None and time.monotonic() - t0 >= 0.5
    release.join()
    holder.close()


@pytest.mark.postgres
def test_postgres_claim_skips_rows_another_transaction_locked(pg_url):
    db = make_queue(pg_url, jobs=2)
    with db.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.execute(text("SELECT id FROM kdrun_jobs WHERE id = 1 FOR UPDATE"))
        future = pool.submit(queue.claim, db, "w", 60)
        try:
            c = future.result(timeout=10)
        except FutureTimeout:
            other.rollback()
            pytest.fail("claim blocked on a locked row instead of skipping it")
        assert c.job_id == 2
        other.rollback()
