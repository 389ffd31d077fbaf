"""The one place a job logs to its trackers: the training process's epoch hook.

`TrackerSet.epoch` is called with every epoch row after the supervisor has stored it
(`kdrun.worker.child`); the trackers start lazily at the first epoch this process trains,
which says whether it resumes (first epoch > 1) and from where. A tracker that fails (not
installed, network, quota, a bug) is reported once in the job's log and switched off for
the rest of the job; it never fails the training. Under DDP only rank 0 logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kdrun.trackers.base import RunContext, Tracker, scalars

SUMMARY_KEYS = ("best_top1", "best_top5", "best_epoch", "last_top1", "last5_top1",
                "teacher_top1", "agree_top1", "spearman", "kendall", "kl", "images_per_s")


def make(name: str) -> Tracker:
    if name == "tensorboard":
        from kdrun.trackers.tb import TensorBoard

        return TensorBoard()
    if name == "wandb":
        from kdrun.trackers.wb import Wandb

        return Wandb()
    raise ValueError(f"unknown tracker {name!r}")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class TrackerSet:
    """The trackers of one job in one training process.

    `stored`: tracker name -> its run record from the database (for resuming). `on_start`
    gets each started tracker's record ({"tracker", "run_id", "name", ...}) to store.
    `history`: the job's epoch rows in the database; a resumed run replays those before its
    first epoch from where the tracker says it may lack them (`replay_from`), so a crash
    between storing an epoch and logging it leaves no gap. `trackers` replaces `names`
    (tests inject failing ones).
    """

    def __init__(self, names: Sequence[str], ctx: RunContext,
                 stored: dict[str, dict[str, Any]] | None = None,
                 on_start: Callable[[dict[str, Any]], None] = lambda rec: None,
                 log: Callable[[str], None] = _stderr,
                 trackers: Sequence[Tracker] | None = None,
                 history: Sequence[dict[str, Any]] = ()) -> None:
        self.ctx, self.stored, self.on_start, self.log = ctx, stored or {}, on_start, log
        self.history = list(history)  # the epoch rows already in the database
        self.names = [] if int(os.environ.get("RANK", "0")) != 0 else list(names)
        self.pending: list[Tracker] | None = list(trackers) if trackers is not None else None
        self.active: list[Tracker] = []

    def __bool__(self) -> bool:
        return bool(self.names or self.pending or self.active)

    def _guard(self, t: Tracker | str, what: str, fn: Callable[[], Any]) -> Any:
        """Run fn; on any error, say so once and drop the tracker for the rest of the job."""
        try:
            return fn()
        except Exception as e:
            name = t if isinstance(t, str) else t.name
            msg = str(e).strip().splitlines()
            self.log(f"tracker {name}: {what} failed, no more logging to it for this job "
                     f"(training goes on): {type(e).__name__}: {msg[0] if msg else ''}")
            if not isinstance(t, str) and t in self.active:
                self.active.remove(t)
            return None

    def _start(self, first_epoch: int) -> None:
        if self.pending is None:
            self.pending = [t for n in self.names
                            if (t := self._guard(n, "import", lambda n=n: make(n))) is not None]
        earlier = sorted((r for r in self.history if int(r["epoch"]) < first_epoch),
                         key=lambda r: int(r["epoch"]))
        for t in self.pending:
            self.active.append(t)
            rec = self._guard(t, "start", lambda t=t: t.start(
                self.ctx, first_epoch, self.stored.get(t.name)))
            if rec is None or t not in self.active:
                continue
            self.on_start({"tracker": t.name, "name": self.ctx.label, **rec})
            since = self._guard(t, "resume", t.replay_from) if first_epoch > 1 else None
            for row in earlier if since is not None else ():  # epochs the tracker may lack
                if int(row["epoch"]) >= since and t in self.active:
                    self._guard(t, f"replaying epoch {row['epoch']}",
                                lambda t=t, row=row: t.log(int(row["epoch"]), scalars(row)))
        self.pending = []

    def epoch(self, row: dict[str, Any]) -> None:
        if self.pending is None or self.pending:
            self._start(int(row["epoch"]))
        values = scalars(row)
        for t in list(self.active):
            self._guard(t, f"logging epoch {row['epoch']}", lambda t=t: t.log(row["epoch"], values))

    def finish(self, result: dict[str, Any] | None, ok: bool) -> None:
        """Close every run; a finished job's results go into the run summary."""
        summary = {k: result[k] for k in SUMMARY_KEYS
                   if result and result.get(k) is not None} or None
        for t in list(self.active):
            self._guard(t, "finish", lambda t=t: t.finish(summary, ok))
        self.active = []


def for_job(job: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> TrackerSet:
    """The TrackerSet of a job as the supervisor hands it to the training process
    (`trackers`, `tracker_runs`, `label`, `grid` in the job message); each started run goes
    back to the supervisor as a `tracker` message, which stores it."""
    from pathlib import Path

    from kdrun.labels import job_label

    runs_dir = Path(job["runs_dir"])
    ctx = RunContext(job["job_id"], job.get("label") or job_label(job["config"]), job["config"],
                     runs_dir / job["run_dir"], runs_dir, job.get("grid"))
    return TrackerSet(job.get("trackers") or [], ctx, job.get("tracker_runs"),
                      on_start=lambda rec: send({"type": "tracker", "run": rec}),
                      history=job.get("tracker_history") or ())
