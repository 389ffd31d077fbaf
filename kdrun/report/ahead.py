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
every row for others). The table takes it when it shows those same epochs and each job it
shows had, when the child read, the last epoch it has now; it ignores the rows of jobs it does
not show. Otherwise (a filter dropped the longest-running student, or a running job recorded
an epoch in between) it reads its own.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Mapping, Sequence
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
        self._process = ctx.Process(target=_read, name="kdrun-curves-ahead", daemon=True,
                                    args=(open_db, include_cancelled, self._conn, child_end))
        self._process.start()
        child_end.close()

    def take(self, shown: Sequence[int], done: Mapping[int, int]) -> Columns | None:
        """`done`: each shown job's last recorded epoch as the caller loaded it. The rows are
        taken only if the child saw the same (no job recorded or restarted an epoch between
        its read and the caller's)."""
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
        self.shown, seen, columns = got
        if self.shown != list(shown) or any(seen.get(j) != e for j, e in done.items()):
            return None
        return columns


def _read(open_db: Callable[[], Database], include_cancelled: bool, parent_end: Connection,
          out: Connection) -> None:
    """In the forked child: the guess, read, sent to the parent (None when there is none)."""
    parent_end.close()  # so that a parent gone without reading fails our send (EPIPE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
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
            seen = dict(s.execute(select(Job.id, Job.epoch).where(*students)).tuples().all())
            first = list(s.scalars(select(func.min(Job.id)).where(*students, Job.epoch > 0)
                                   .group_by(Job.method)))
        last = max(seen.values(), default=0)
        if last > 0:
            shown = shown_epochs(range(1, last + 1))
            likely = component_names(db, first, shown)
            got = (shown, seen, read_columns(db, sorted(seen), shown, DISPLAYED, likely))
    except Exception:  # a failed guess: the parent reads (and reports errors) itself
        got = None
    try:
        out.send(got)
    except OSError:  # the parent has gone
        pass
