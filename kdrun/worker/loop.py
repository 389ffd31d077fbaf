"""The worker: claim jobs, run each under a supervisor, repeat, and stop cleanly.

One thread per slot (a device times `--slots`) claims and supervises jobs; the training
itself runs in child processes. The first SIGTERM/SIGINT stops claiming and asks running
jobs to finish their epoch, checkpoint and go back to the queue without using an attempt;
a second one kills them and exits at once (their leases expire and others reclaim them).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.worker.supervisor import (
    DB_DOWN,
    LogFn,
    Outcome,
    ProgressFn,
    Slot,
    WorkerSettings,
    kill_all,
    supervise,
)


@dataclass
class WorkerOptions:
    runs_dir: Path
    data_dir: Path
    devices: list[str] = field(default_factory=lambda: ["cpu"])  # "cpu" or "cuda:N"
    slots: int = 1  # jobs at once on each device
    lease_seconds: float = 300.0
    backoff_seconds: float = queue.BACKOFF_S
    until_empty: bool = False
    max_jobs: int | None = None
    poll_seconds: float = 5.0
    loader_workers: int = 0
    download: bool = False
    max_failures: int = 5  # consecutive suspect failures within failure_window_s stop the worker
    failure_window_s: float = 600.0


@dataclass
class Summary:
    jobs: int  # jobs claimed and run (to any outcome)
    stopped_because: str | None = None  # set when the worker stopped before its queue ran dry
    failed_over: bool = False  # stopped by the failure breaker: exit non-zero


class FailureBreaker:
    """Stops a worker after K failed jobs in a row within a short window. When everything
    fails on one machine, the machine (driver, disk, full memory) is the likely culprit, and
    going on would burn through the attempts of the whole queue. Only failures that retrying
    could fix count; deterministic ones (bad config, NaN loss) would fail anywhere."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.times: deque[float] = deque(maxlen=limit)
        self.lock = threading.Lock()

    def record(self, outcome: Outcome) -> str | None:
        """The reason to stop, once tripped."""
        with self.lock:
            if outcome.state == "succeeded":
                self.times.clear()
            if not outcome.suspect:
                return None
            self.times.append(time.monotonic())
            span = self.times[-1] - self.times[0]
            if len(self.times) == self.limit and span <= self.window_s:
                return (f"{self.limit} jobs in a row failed within {span:.0f} s (last: "
                        f"{outcome.note}); this machine may be the problem. Check it, then "
                        "`kdrun retry` the failed jobs")
            return None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_slots(opts: WorkerOptions) -> list[Slot]:
    """`slots` per device; the CPU cores are shared out when several processes train."""
    n = len(opts.devices) * opts.slots
    threads = max(1, (os.cpu_count() or 1) // n) if n > 1 else None
    return [Slot(f"{worker_name()}:{dev.replace(':', '')}#{k}", dev, threads)
            for dev in opts.devices for k in range(opts.slots)]


@contextmanager
def signals_handled(on_signal) -> Iterator[None]:
    """Route SIGTERM and SIGINT to `on_signal` (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda signum, _frame: on_signal(signum))
           for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Worker:
    def __init__(self, db: Database, opts: WorkerOptions, log: LogFn,
                 progress: ProgressFn) -> None:
        self.db, self.opts, self.log, self.progress = db, opts, log, progress
        self.settings = WorkerSettings(opts.runs_dir, opts.data_dir, opts.lease_seconds,
                                       opts.backoff_seconds, opts.loader_workers, opts.download)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.claimed = 0
        self.breaker = FailureBreaker(opts.max_failures, opts.failure_window_s)
        self.summary = Summary(0)

    def run(self) -> Summary:
        threads = [threading.Thread(target=self.serve, args=(slot,), name=slot.name, daemon=True)
                   for slot in make_slots(self.opts)]
        with signals_handled(self.on_signal):
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        self.summary.jobs = self.claimed
        return self.summary

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            self.halt(f"{name} received")
            self.log(f"[yellow]{name}[/]: claiming no more jobs; running jobs finish their "
                     "epoch, checkpoint and go back to the queue. Send it again to exit now.")
            return
        self.log(f"[red]{name} again[/]: exiting now; the running jobs' leases will expire "
                 "and other workers will resume them")
        kill_all()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)  # at once: no cleanup that could hang

    def halt(self, reason: str, failed_over: bool = False) -> None:
        with self.lock:
            if self.summary.stopped_because is None:
                self.summary.stopped_because, self.summary.failed_over = reason, failed_over
        self.stop.set()

    def _reserve(self) -> bool:
        """Count a job against --max-jobs before claiming it."""
        with self.lock:
            if self.opts.max_jobs is not None and self.claimed >= self.opts.max_jobs:
                return False
            self.claimed += 1
            return True

    def _unreserve(self) -> None:
        with self.lock:
            self.claimed -= 1

    def serve(self, slot: Slot) -> None:
        try:
            while not self.stop.is_set() and self._reserve():
                if not self.serve_one(slot):
                    self._unreserve()
                    if self.opts.until_empty and not self._more_to_come():
                        return
                    self.stop.wait(self.opts.poll_seconds)
        except Exception:  # a bug: say so loudly and stop this worker, leases will expire
            self.log(f"[red]internal error[/] in {slot.name}:\n{traceback.format_exc()}")
            self.halt("internal error (see above)", failed_over=True)

    def _more_to_come(self) -> bool:
        try:
            return queue.has_runnable_or_running(self.db)
        except DB_DOWN:
            return True

    def serve_one(self, slot: Slot) -> bool:
        """Claim and run one job; False when there was none to claim."""
        start = time.monotonic()
        try:
            claim = queue.claim(self.db, slot.name, self.opts.lease_seconds,
                                self.opts.backoff_seconds)
        except DB_DOWN as e:
            self.log(f"[yellow]database unavailable[/], retrying: {_reason(e)}")
            return False
        if claim is None:
            return False
        if self.stop.is_set():  # a signal came while we were claiming
            queue.requeue(self.db, claim, "worker stopping")
            return True
        c = claim.config
        label = (f"job {claim.job_id}: {c['teacher']['name'] + '->' if c['teacher'] else ''}"
                 f"{c['student']} {c['method']['name']} seed {c['seed']}")
        self.log(f"[bold]claimed[/] {label} (attempt {claim.attempt}) on {slot.device}")
        try:
            outcome = supervise(self.db, claim, slot, self.settings, self.stop, start,
                                self.log, self.progress)
        except queue.LeaseLost as e:
            outcome = Outcome("lost", f"lease lost, training stopped, nothing recorded: {e}")
        except DB_DOWN as e:
            outcome = Outcome("lost", f"database error, training stopped; the job will be "
                                      f"reclaimed when its lease expires: {_reason(e)}")
        color = {"succeeded": "green", "queued": "yellow", "lost": "yellow"}.get(
            outcome.state, "red")
        self.log(f"[{color}]{outcome.state}[/] {label}: {outcome.note}")
        reason = self.breaker.record(outcome)
        if reason:
            self.halt(reason, failed_over=True)
        return True


def _reason(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def work(db: Database, opts: WorkerOptions, log: LogFn = print,
         progress: ProgressFn = lambda slot, desc, done, total: None) -> Summary:
    """Claim and run jobs until the queue is empty (with until_empty), max_jobs were run, a
    signal arrives, or too many jobs fail in a row."""
    return Worker(db, opts, log, progress).run()
