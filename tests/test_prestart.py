"""A worker starts each slot's next training process while the current job trains: the next
job runs in that prestarted process (its log says so), with the secrets scrubbed like any
training process's, and no prestarted process outlives the worker."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.grid import expand
from kdrun.worker import WorkerOptions, work
from tests.helpers import tiny_grid

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

AHEAD = re.compile(r"training process (\d+): started [0-9.]+ s ahead of this job")


def two_jobs(url: str) -> Database:
    grid = tiny_grid(recipe={"epochs": 1, "batch_size": 16, "lr_milestones": [],
                             "eval_batch_size": 32}, methods=["vanilla"], seeds=[0, 1])
    grid["dataset"].update(train_size=32, test_size=16)
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [sp for sp in expand(grid)[1] if sp.kind == "student"])
    return db


def logs(runs: Path) -> list[str]:
    return [p.read_text() for p in sorted(runs.glob("*/train.log"))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def children() -> list[int]:
    """Live processes whose parent is this one."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == str(os.getpid()) and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def test_next_job_runs_in_the_process_started_ahead(tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "hunter2-prestart")
    runs = tmp_path / "runs"
    db = two_jobs(f"sqlite:///{tmp_path / 'kdrun.db'}")
    summary = work(db, WorkerOptions(runs_dir=runs, data_dir=runs, until_empty=True,
                                     poll_seconds=0.2))
    assert summary.outcomes == {"succeeded": 2}
    first, second = logs(runs)
    assert not AHEAD.search(first)  # the first job's process was started for it
    pid = int(AHEAD.search(second).group(1))  # the second one's was waiting for it
    environ = Path(f"/proc/{pid}/environ")
    assert not environ.exists() or b"hunter2-prestart" not in environ.read_bytes()
    assert not alive(pid)
    # None is started ahead of a job that is not in the queue, and none outlives the worker:
    # no training process (a child of this process) is left.
    assert [pid for pid in children() if b"kdrun.worker.child" in cmdline(pid)] == []
    db.dispose()
