"""The terminal curves table's epoch rows, read on the second core while pandas loads.

`kdrun report --table curves` shows about ten epochs of every student: on 10k jobs x 240
epochs that is 100k rows scattered over the whole epochs table, about 0.5 s of reading that
needs neither pandas nor the jobs table. So the command forks a process that reads them
first, while the main process imports pandas and loads the jobs; the rows come back as
arrays through a pipe. (A thread would not do: every row SQLite returns takes Python's GIL
back, and the two threads would take turns instead of running side by side.)

The read is a guess made before the jobs are loaded and filtered: the epochs the
longest-running student's curve shows, of every student not cancelled (every student with
--include-cancelled), with the loss components of one job per method (read_columns checks
every row for others). The table takes it when it shows those same epochs, and ignores the
rows of jobs it does not show; otherwise (say a filter dropped the longest-running student)
it reads its own.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the child imports them itself, beside the parent (see CurvesAhead)
    from multiprocessing.connection import Connection

    import numpy as np

    from kdrun.db.engine import Database

SHOWN_EPOCHS = 10
# The terminal view: accuracy and losses; top-5, train top-1 and lr are in CSV/JSON only.
DISPLAYED = ("test_top1", "val_top1", "train_loss")

Columns = tuple[list[str], list["np.ndarray"]]  # kdrun.report.epoch_sql.read_columns


def shown_epochs(all_epochs: Sequence[int], k: int = SHOWN_EPOCHS) -> list[int]:
    """At most k epochs, evenly spaced, always the first and the last."""
    all_epochs = list(all_epochs)
    if len(all_epochs) <= k:
        return all_epochs
    idx = sorted({round(i * (len(all_epochs) - 1) / (k - 1)) for i in range(k)})
    return [all_epochs[i] for i in idx]


class CurvesAhead:
    """Starts the reading process at construction; `take(shown)` waits for its columns
    (kdrun.report.epoch_sql.read_columns' form) and returns them when `shown` is what it
    read; None otherwise, or when it failed (the caller then reads, and reports errors,
    itself), or where processes cannot be forked.

    `open_db` opens the database in the child. The command forks before it has imported
    SQLAlchemy or opened anything: the child imports its own and opens its own connection
    while the parent does the same (a database object the parent has used may be passed:
    the child leaves its connections alone)."""

    def __init__(self, open_db: Callable[[], Database], include_cancelled: bool = False) -> None:
        self.shown: list[int] | None = None
        self._process: Any = None
        if "fork" not in mp.get_all_start_methods():
            return
        ctx = mp.get_context("fork")  # starts at once, and `open_db` need not be picklable
        self._conn, child_end = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_read, args=(open_db, include_cancelled, child_end),
                                    name="kdrun-curves-ahead", daemon=True)
        self._process.start()
        child_end.close()

    def take(self, shown: Sequence[int]) -> Columns | None:
        if self._process is None:
            return None
        try:
            got = self._conn.recv()
        except (EOFError, OSError):  # it died without a word
            got = None
        finally:
            self._conn.close()
            self._process.join()
            self._process = None
        if got is None:
            return None
        self.shown, columns = got
        return columns if self.shown == list(shown) else None


def _read(open_db: Callable[[], Database], include_cancelled: bool, out: Connection) -> None:
    """In the forked child: the guess, read, sent to the parent (None when there is none)."""
    got = None
    try:
        from sqlalchemy import func, select

        from kdrun.db.models import Job
        from kdrun.report.epoch_sql import component_names, read_columns

        db = open_db()
        db.engine.dispose(close=False)  # the parent's connections stay the parent's
        students = [Job.kind == "student"]
        if not include_cancelled:
            students.append(Job.state != "cancelled")
        with db.read() as s:
            done = s.scalar(select(func.max(Job.epoch)).where(*students)) or 0
            jobs = list(s.scalars(select(Job.id).where(*students).order_by(Job.id)))
            first = list(s.scalars(select(func.min(Job.id)).where(*students, Job.epoch > 0)
                                   .group_by(Job.method)))
        if done > 0:
            shown = shown_epochs(range(1, done + 1))
            likely = component_names(db, first, shown)
            got = (shown, read_columns(db, jobs, shown, DISPLAYED, likely))
    except BaseException:  # a failed guess, or Ctrl-C: the parent reads (and reports) itself
        got = None
    try:
        out.send(got)
    except OSError:  # the parent has gone
        pass
