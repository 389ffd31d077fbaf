"""Concurrent `kdrun enqueue` of one grid: every process exits 0, one row per job, on a new
database (schema creation races) and an existing one (the unique hash index races)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.grid import expand
from tests.helpers import tiny_grid, write_grid

# Each process imports the CLI first, then waits for the same instant to enqueue.
RACER = """
import os, sys, time
from kdrun.cli import app
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.002)
app(sys.argv[2:])
"""


def race(url: str, grid: Path, tmp: Path, n: int = 3) -> list[subprocess.CompletedProcess]:
    go = tmp / "go"
    go.unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go), "--db", url,
                               "--runs-dir", str(tmp / "runs"), "--data-dir", str(tmp),
                               "enqueue", "--grid", str(grid)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(n)]
    time.sleep(0.5)
    go.touch()
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return out


def rows_per_hash(url: str) -> tuple[int, int]:
    db = Database(url)
    with db.read() as s:
        total = s.execute(select(func.count()).select_from(Job)).scalar_one()
        distinct = s.execute(select(func.count(func.distinct(Job.hash)))).scalar_one()
    db.dispose()
    return total, distinct


@pytest.mark.postgres
@pytest.mark.parametrize("existing", [False, True], ids=["new-db", "existing-db"])
def test_concurrent_enqueues_on_postgres(pg_url, tmp_path, existing):
    grid = tiny_grid()
    path = write_grid(tmp_path / "g.yaml", grid)
    n_jobs = len(expand(grid)[1])
    if existing:
        db = Database(pg_url)
        migrate.upgrade(db)
        db.dispose()
    results = race(pg_url, path, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stdout
        assert "Traceback" not in r.stdout and "IntegrityError" not in r.stdout
    assert rows_per_hash(pg_url) == (n_jobs, n_jobs)
    said = " ".join(r.stdout for r in results)
    assert said.count(f"added {n_jobs} jobs") == 1, said
    assert said.count(f"0 new jobs, {n_jobs} already queued") == 2, said


def test_enqueue_skips_existing_hashes_in_bulk(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    _, specs = expand(tiny_grid())
    assert queue.enqueue(db, "tiny", specs[:2]) == (2, 0)
    assert queue.enqueue(db, "tiny", specs) == (len(specs) - 2, 2)
    assert queue.enqueue(db, "tiny", specs) == (0, len(specs))
    with db.read() as s:
        jobs = {j.hash: j for j in s.scalars(select(Job))}
    assert len(jobs) == len(specs)
    for sp in specs:  # students point at their teacher's row
        dep = jobs[sp.hash].depends_on_id
        assert dep == (jobs[sp.depends_on].id if sp.depends_on else None)
