"""Signals as a cluster scheduler sends them (no Slurm needed): Slurm sends SIGTERM to every
process of a job (time limit, scancel, pre-emption, scontrol requeue) and SIGUSR1 as the
time-limit warning. The training process ignores SIGTERM; the worker hands the job back with
`attempts` unchanged, cutting an epoch that would outlast --stop-within; the job then ends
with the metrics of an uninterrupted run. Plus the hand-back limit and --idle-exit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from sqlalchemy import select, update

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, Job
from kdrun.worker import WorkerOptions, work
from tests.test_worker import (
    _no_worker_outlives_its_test,  # noqa: F401  (autouse: no worker outlives a test)
    alive,
    children,
    epoch_rows,
    finish,
    job_row,
    metrics,
    new_queue,
    outcomes,
    result,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses POSIX signals and /proc")


def attempt_errors(db: Database) -> list[str | None]:
    with db.read() as s:
        return list(s.scalars(select(Attempt.error).order_by(Attempt.id)))


def test_slurm_style_signals_hand_the_job_back_without_an_attempt(tmp_path, one_thread):
    """SIGUSR1 (the warning) to the worker, SIGTERM to its training process (as Slurm signals
    every process): the trainer lives on, finishes its epoch, the job is requeued with
    attempts unchanged, and resumed elsewhere it ends exactly like an uninterrupted run."""
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    ref_url = f"sqlite:///{tmp_path / 'ref.db'}"
    db, ref = new_queue(url, max_attempts=1, epochs=4), new_queue(ref_url, epochs=4)
    reference = start_worker(ref_url, tmp_path / "ref-runs", until_empty=True)
    w1 = start_worker(url, tmp_path / "runs")
    wait_for(lambda: job_row(db).epoch >= 1, what="an epoch")
    trainers = children(w1.pid)
    assert trainers
    for pid in trainers:
        os.kill(pid, signal.SIGTERM)
    w1.send_signal(signal.SIGUSR1)
    w1.send_signal(signal.SIGTERM)  # the time limit after the warning: not "exit at once"
    out = finish(w1, timeout=60)
    assert "SIGUSR1" in out and "attempt not counted" in out, out
    job = job_row(db)
    assert (job.state, job.attempts, job.handbacks) == ("queued", 0, 1)
    assert outcomes(db) == ["requeued"]
    assert "killed by" not in (attempt_errors(db)[0] or "")  # it ended on its own
    finish(start_worker(url, tmp_path / "runs", until_empty=True))
    job = job_row(db)
    assert (job.state, job.attempts) == ("succeeded", 1)  # max_attempts=1 and yet it finished
    finish(reference)
    assert metrics(db) == metrics(ref)
    assert result(db) == result(ref)


def test_sigterm_cuts_an_epoch_that_outlasts_stop_within(tmp_path, one_thread):
    """A training process ignores SIGTERM; the worker's own SIGTERM with --stop-within 0 cuts
    the running epoch (the scheduler's KillWait would not wait for it) and requeues."""
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = new_queue(url, max_attempts=1, epochs=3)
    with db.write() as s:  # long epochs: the signal lands inside one
        config = s.get(Job, 1).config
        config["dataset"]["train_size"] = 4000
        s.execute(update(Job).values(config=config))
    w1 = start_worker(url, tmp_path / "runs", stop_within=0.0)
    trainers = wait_for(lambda: children(w1.pid), what="a training process")
    time.sleep(1.0)
    for pid in trainers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert all(alive(p) for p in trainers)  # ignored: only the supervisor acts
    w1.send_signal(signal.SIGTERM)
    out = finish(w1, timeout=30)
    assert "cut at the stop deadline" in out, out
    wait_for(lambda: not any(alive(p) for p in trainers), 10, "training process exit")
    job = job_row(db)
    assert (job.state, job.attempts) == ("queued", 0) and job.epoch < 3
    assert outcomes(db) == ["requeued"] and len(epoch_rows(db)) == job.epoch


def test_a_job_handed_back_too_often_fails_with_that_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = new_queue(url)
    for _ in range(queue.MAX_HANDBACKS):
        claim = queue.claim(db, "w", 60, backoff_s=0)
        assert queue.requeue(db, claim, "time limit") == "queued"
    claim = queue.claim(db, "w", 60, backoff_s=0)
    assert claim.attempt == 1  # twenty hand-backs used no attempt
    assert queue.requeue(db, claim, "time limit") == "failed"
    job = job_row(db)
    assert job.state == "failed" and job.error.startswith(
        f"handed back {queue.MAX_HANDBACKS + 1} times without finishing (last: time limit)")
    assert queue.retry(db, queue.select_jobs([1])) == 1
    assert (job_row(db).handbacks, job_row(db).state) == (0, "queued")


def test_idle_exit_leaves_when_nothing_is_runnable(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    lines: list[str] = []
    t0 = time.monotonic()
    summary = work(db, WorkerOptions(tmp_path, tmp_path, poll_seconds=0.05, idle_exit=0.3),
                   log=lines.append)
    assert summary.jobs == 0 and 0.3 <= time.monotonic() - t0 < 5
    assert any("--idle-exit" in line for line in lines)
