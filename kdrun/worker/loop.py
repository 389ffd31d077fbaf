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

from kdrun import headline
from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.labels import job_label
from kdrun.loader_workers import cpus_per_job
from kdrun.worker import ranks
from kdrun.worker.pool import Pool
from kdrun.worker.stopping import STOP_SIGNALS, Stop
from kdrun.worker.supervisor import (
    DB_DOWN,
    LogFn,
    Outcome,
    ProgressFn,
    Slot,
    TrainingProcess,
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
    loader_workers: int | None = None  # None: sized from the CPUs (kdrun.data.workers)
    download: bool = False
    max_failures: int = 5  # consecutive suspect failures within failure_window_s stop the worker
    failure_window_s: float = 600.0
    trackers: tuple[str, ...] = ()  # --tracker (kdrun.trackers): logged for every job run here
    stop_within: float | None = None  # after a stop signal, cut jobs whose epoch runs longer
    idle_exit: float | None = None  # a slot with nothing runnable for this long exits
    # Start each slot's next training process (imports done, waiting for a job) while its
    # current job trains, so short jobs do not spend most of their time starting up.
    prestart: bool = True


@dataclass
class Summary:
    jobs: int  # jobs claimed and run (to any outcome)
    stopped_because: str | None = None  # set when the worker stopped before its queue ran dry
    failed_over: bool = False  # stopped by the failure breaker: exit non-zero
    outcomes: dict[str, int] = field(default_factory=dict)  # state after each job -> count
    # --until-empty ran dry while queued jobs wait on failed or cancelled ones: exit non-zero
    stranded: list[queue.Blocker] = field(default_factory=list)
    # ... or while queued jobs need more devices than this worker has: [(job id, gpus)]
    too_wide: list[tuple[int, int]] = field(default_factory=list)
    capacity: int = 1  # the widest job this worker could run (its GPUs, or CPU slots)
    # ... or while queued jobs need more machines than its allocation: [(job id, nodes)]
    too_many_nodes: list[tuple[int, int]] = field(default_factory=list)


class FailureBreaker:
    """Stops a worker after K failed jobs in a row within a short window. When everything
    fails on one machine, the machine (driver, disk, full memory) is the likely culprit, and
    going on would burn through the attempts of the whole queue. Only failures that retrying
    could fix count; deterministic ones (bad config, NaN loss) would fail anywhere. But the
    same deterministic error several jobs in a row (a missing dataset, a full disk) has a
    cause outside the jobs, and would fail the whole queue one job at a time: that stops the
    worker too."""

    SAME = 3  # identical deterministic failures in a row that stop the worker

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.times: deque[float] = deque(maxlen=limit)
        self.same: deque[str] = deque(maxlen=min(limit, self.SAME))
        self.lock = threading.Lock()

    def record(self, outcome: Outcome) -> str | None:
        """The reason to stop, once tripped."""
        with self.lock:
            if outcome.state == "succeeded":
                self.times.clear()
            if outcome.state == "failed" and not outcome.suspect:
                self.same.append(outcome.note)
                if len(self.same) == self.same.maxlen and len(set(self.same)) == 1:
                    return (f"{len(self.same)} jobs in a row failed with the same error "
                            f"({outcome.note}); every job like them would fail too. Fix the "
                            "cause, then `kdrun retry` the failed jobs")
                return None
            self.same.clear()
            if not outcome.suspect:
                return None
            self.times.append(time.monotonic())
            span = self.times[-1] - self.times[0]
            if len(self.times) == self.limit and span <= self.window_s:
                return (f"{self.limit} jobs in a row failed within {span:.0f} s (last: "
                        f"{outcome.note}); this machine may be the problem. Check it, then "
                        "`kdrun retry` the failed jobs")
            return None


SEEN_EVERY_S = 60.0  # how often a worker records itself in kdrun_workers


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_slots(opts: WorkerOptions) -> list[Slot]:
    """`slots` per device; the CPU cores are shared out when several processes train."""
    n = len(opts.devices) * opts.slots
    threads = cpus_per_job(n) if n > 1 else None  # of the CPUs this process may use
    return [Slot(f"{worker_name()}:{dev.replace(':', '')}#{k}", dev, threads)
            for dev in opts.devices for k in range(opts.slots)]


@contextmanager
def signals_handled(on_signal) -> Iterator[None]:
    """Route SIGTERM, SIGINT and SIGUSR1 to `on_signal` (only the main thread may install
    handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda signum, _frame: on_signal(signum))
           for s in STOP_SIGNALS}
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
                                       opts.backoff_seconds, opts.loader_workers, opts.download,
                                       tuple(opts.trackers))
        self.stop = Stop()
        self.lock = threading.Lock()
        self.claimed = 0
        self.breaker = FailureBreaker(opts.max_failures, opts.failure_window_s)
        self._blocked_seen: tuple[tuple[int, int], ...] = ()  # last blocked jobs reported
        self._wide_seen: tuple[tuple[int, int], ...] = ()  # last too-wide jobs reported
        self.pool = Pool(make_slots(opts))
        self.warm: dict[int, TrainingProcess] = {}  # slot -> its next job's process, started
        self.done = threading.Event()  # every slot's thread has ended
        self.summary = Summary(0, capacity=self.pool.capacity)
        # Machines this worker can start ranks on: its Slurm allocation's (multi-node jobs).
        self.nodes = max(1, ranks.allocation_nodes())

    def run(self) -> Summary:
        threads = [threading.Thread(target=self.serve, args=(i,), name=slot.name, daemon=True)
                   for i, slot in enumerate(self.pool.slots)]
        seen = threading.Thread(target=self._seen, name="seen", daemon=True)
        seen.start()
        with signals_handled(self.on_signal):
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        self.done.set()
        self._close_warm()
        seen.join(timeout=5.0)
        self.summary.jobs = self.claimed
        if self.opts.until_empty and self.summary.stopped_because is None:
            try:
                self.summary.stranded = queue.blockers(self.db)
                self.summary.too_wide = queue.too_wide(self.db, self.pool.capacity)[1]
                self.summary.too_many_nodes = queue.too_many_nodes(self.db, self.nodes)
            except DB_DOWN:
                pass
        return self.summary

    def _seen(self) -> None:
        """Record this worker's device count every SEEN_EVERY_S, so `status` can tell jobs
        wider than any worker (which wait for ever) from jobs merely queued. A thread of its
        own: a slow database never holds up the slots or the signal handling."""
        while True:
            try:
                queue.worker_seen(self.db, worker_name(), self.pool.capacity)
            except DB_DOWN:
                pass
            if self.done.wait(SEEN_EVERY_S):
                return

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        # SIGUSR1 is a scheduler's warning, SIGTERM may be its deadline (kdrun.worker.stopping)
        insists = signum != signal.SIGUSR1
        if not (insists and self.stop.insisted):
            cut = ""
            if insists:
                self.stop.insisted = True
                self.stop.cut_within(self.opts.stop_within)
                if self.opts.stop_within is not None:
                    cut = f" (or are cut within {self.opts.stop_within:g} s)"
            first = not self.stop.is_set()
            self.halt(f"{name} received")
            if first or cut:
                self.log(f"[yellow]{name}[/]: claiming no more jobs; running jobs finish their "
                         f"epoch{cut}, checkpoint and go back to the queue without using an "
                         "attempt. Send SIGTERM twice to exit now.")
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

    def serve(self, i: int) -> None:
        """Slot i's thread: claim and run jobs, except while its unit is lent to a group job."""
        slot = self.pool.slots[i]
        try:
            idle_since = time.monotonic()
            while not self.stop.is_set():
                if self.pool.lent(i):  # another slot's group job trains on this unit
                    self.pool.wait_returned(i, self.opts.poll_seconds)
                    idle_since = time.monotonic()
                    continue
                if not self._reserve():
                    return
                if self.serve_one(i):
                    idle_since = time.monotonic()
                else:
                    self._unreserve()
                    if self.pool.lent(i):
                        continue
                    if self.opts.until_empty and not self._more_to_come():
                        return
                    self._note_blocked()
                    self._note_too_wide()
                    idle = time.monotonic() - idle_since
                    if self.opts.idle_exit is not None and idle >= self.opts.idle_exit:
                        self.log(f"{slot.name}: nothing runnable for {idle:.0f} s, leaving "
                                 "(--idle-exit)")
                        return
                    self.stop.wait(self.opts.poll_seconds)
        except Exception:  # a bug: say so loudly and stop this worker, leases will expire
            self.log(f"[red]internal error[/] in {slot.name}:\n{traceback.format_exc()}")
            self.halt("internal error (see above)", failed_over=True)

    def _note_blocked(self) -> None:
        """While idle, say once (and again when it changes) which queued jobs wait on failed
        or cancelled jobs: without that they look merely queued."""
        try:
            stuck = queue.blockers(self.db)
        except DB_DOWN:
            return
        key = tuple((b.job_id, len(b.blocked)) for b in stuck)
        with self.lock:
            if key == self._blocked_seen:
                return
            self._blocked_seen = key
        if stuck:
            self.log(f"[yellow]waiting[/]: {sum(len(b.blocked) for b in stuck)} queued job(s) "
                     "are blocked by failed or cancelled job(s) "
                     f"{', '.join(str(b.job_id) for b in stuck)} and run only after `kdrun "
                     "retry` of those (see `kdrun status`)")

    def _note_too_wide(self) -> None:
        """While idle, say once (and again when it changes) which queued jobs need more
        devices than this worker has: they wait for a bigger worker, never for this one."""
        try:
            units, wide = queue.too_wide(self.db, self.pool.capacity)
        except DB_DOWN:
            return
        key = tuple(wide)
        with self.lock:
            if key == self._wide_seen:
                return
            self._wide_seen = key
        if wide:
            self.log(f"[yellow]waiting[/]: {queue.too_wide_text(wide, units, 'this worker')}; "
                     "they wait for a worker with more")

    def _more_to_come(self) -> bool:
        try:
            return queue.has_runnable_or_running(self.db, self.pool.capacity, self.nodes)
        except DB_DOWN:
            return True

    def serve_one(self, i: int) -> bool:
        """Claim and run one job with slot i (and, for a group job, the units it borrows);
        False when there was none to claim."""
        start = time.monotonic()
        pool = self.pool
        try:
            with pool.lock:  # claim and lend under one lock: no unit is promised twice
                if pool.lent(i):  # lent since this thread last looked: nothing to claim
                    return False
                claim = queue.claim(self.db, lambda gpus: pool.name(i, gpus),
                                    self.opts.lease_seconds, self.opts.backoff_seconds,
                                    idle=pool.idle(i), capacity=pool.capacity,
                                    nodes=self.nodes)
                slot = pool.take(i, claim.gpus) if claim is not None else None
        except DB_DOWN as e:
            self.log(f"[yellow]database unavailable[/], retrying: {headline.reason(e)}")
            return False
        if claim is None or slot is None:
            return False
        try:
            return self._run(i, claim, slot, start)
        finally:
            pool.give_back(i)

    def _prestart(self, i: int) -> None:
        """Start slot i's next training process now, while its current job trains, when a
        next job is in sight (queued, and --max-jobs not reached)."""
        if not self.opts.prestart or self.stop.is_set():
            return
        try:
            if not queue.has_waiting(self.db, self.pool.capacity, self.nodes):
                return
        except DB_DOWN:
            return
        with self.lock:
            more = self.opts.max_jobs is None or self.claimed < self.opts.max_jobs
            if more and i not in self.warm and not self.stop.is_set():
                try:
                    self.warm[i] = TrainingProcess.warm(self.pool.slots[i].device)
                except OSError as e:  # no matter: the next job starts its own
                    self.log(f"[yellow]could not start a process ahead[/]: {e}")

    def _close_warm(self) -> None:
        with self.lock:
            warm, self.warm = list(self.warm.values()), {}
        for w in warm:
            w.close(0.0)

    def _run(self, i: int, claim: queue.Claim, slot: Slot, start: float) -> bool:
        if self.stop.is_set():  # a signal came while we were claiming
            queue.requeue(self.db, claim, "worker stopping")
            return True
        label = f"job {claim.job_id} {claim.label or job_label(claim.config)}"
        where = slot.device
        progress = self.progress
        if len(slot.devices) > 1:
            where = (f"{len(slot.devices)} CPU ranks" if slot.device == "cpu"
                     else "+".join(slot.devices))

            def progress(name: str, desc: str | None, done: int, total: int) -> None:
                self.progress(name, desc and f"{desc} on {where}", done, total)

        self.log(f"[bold]claimed[/] {label} (attempt {claim.attempt}) on {where}")
        warm = None
        if len(slot.devices) == 1 and claim.config["recipe"].get("nodes", 1) == 1:
            with self.lock:
                warm = self.warm.pop(i, None)
        try:
            outcome = supervise(self.db, claim, slot, self.settings, self.stop, start,
                                self.log, progress, warm, lambda: self._prestart(i))
        except queue.LeaseLost as e:
            outcome = Outcome("lost", f"lease lost, training stopped, nothing recorded: {e}")
        except DB_DOWN as e:
            outcome = Outcome("lost", f"database error, training stopped; the job will be "
                                      f"reclaimed when its lease expires: {headline.reason(e)}")
        finally:
            if warm is not None and not warm.started:  # the job never got to use it
                warm.close(0.0)
        color = {"succeeded": "green", "queued": "yellow", "lost": "yellow"}.get(
            outcome.state, "red")
        self.log(f"[{color}]{outcome.state}[/] {label}: {outcome.note}")
        with self.lock:
            self.summary.outcomes[outcome.state] = self.summary.outcomes.get(outcome.state, 0) + 1
        reason = self.breaker.record(outcome)
        if reason:
            self.halt(reason, failed_over=True)
        return True



def work(db: Database, opts: WorkerOptions, log: LogFn = print,
         progress: ProgressFn = lambda slot, desc, done, total: None) -> Summary:
    """Claim and run jobs until the queue is empty (with until_empty), max_jobs were run, a
    signal arrives, or too many jobs fail in a row."""
    return Worker(db, opts, log, progress).run()
