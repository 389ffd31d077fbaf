"""I/O errors are job errors, never worker crashes, and a stored error's first line is its
cause (kdrun.headline)."""

from __future__ import annotations

import errno

from sqlalchemy import select

from kdrun import headline
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.grid import expand
from kdrun.worker import WorkerOptions, work
from tests.helpers import tiny_grid


def test_a_runs_dir_that_cannot_be_created_leaves_no_job_running(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    grid = tiny_grid(methods=["vanilla"], seeds=[0, 1])
    queue.enqueue(db, "g", [sp for sp in expand(grid)[1] if sp.kind == "student"])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the runs directory should be")
    opts = WorkerOptions(blocker / "runs", tmp_path, until_empty=True, poll_seconds=0.05,
                         backoff_seconds=0.0, max_failures=3)
    lines: list[str] = []
    summary = work(db, opts, log=lines.append)
    assert "internal error" not in " ".join(lines)
    with db.read() as s:
        jobs = list(s.scalars(select(Job)))
    assert jobs and {j.state for j in jobs} <= {"queued", "failed"}  # none left running
    tried = [j for j in jobs if j.attempts]
    assert tried
    for j in tried:
        first = j.error.splitlines()[0]
        assert first.startswith("Not a directory: ") and str(blocker) in first, first
    assert summary.failed_over  # the failure breaker stopped it, as for any machine fault
    assert "3 jobs in a row failed" in summary.stopped_because


def test_headline_is_the_root_os_error():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "runs/1/last.x.e0001.pt")
        except OSError as e:
            raise RuntimeError("[enforce fail at inline_container.cc:664] unexpected pos") from e
    except RuntimeError as e:
        assert headline.line(e) == "No space left on device: runs/1/last.x.e0001.pt"
    assert headline.line(ValueError("bad\nmore")) == "ValueError: bad"
