"""Fenced, verified checkpoint files (kdrun.checkpoints), with real workers on SQLite.

- A stale writer: a training process stopped between writing its epoch checkpoint and
  publishing it, resumed after another worker took the job over and finished it, changes
  nothing: state, metrics and weights are the new owner's.
- A bit-flipped newest checkpoint is detected on resume; the job falls back to the previous
  one and ends with the metrics and weights of an uninterrupted run.
- Truncated checkpoints cost no attempt (max_attempts=1): the job restarts from epoch 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from kdrun import checkpoints
from kdrun.db.engine import Database
from kdrun.db.models import CheckpointFile
from tests.helpers import cli
from tests.test_worker import (
    WORKER,
    _no_worker_outlives_its_test,  # noqa: F401  (autouse: no worker outlives a test)
    _started,
    alive,
    children,
    epoch_rows,
    finish,
    freeze,
    job_row,
    metrics,
    new_queue,
    outcomes,
    result,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses POSIX signals")

EPOCHS = 5
LEASE = 3.0

# Loaded by the stale worker's processes (through PYTHONPATH): its training process writes the
# checkpoint of epoch 2, then stops itself before telling its supervisor.
PAUSE = """
import os, signal
from pathlib import Path
import kdrun.checkpoints as c
_save, marker = c.save, Path(os.environ["KDRUN_TEST_MARKER"])
def save(obj, path):
    digest = _save(obj, path)
    if Path(path).name.endswith(".e0002.pt") and not marker.exists():
        marker.write_text(str(path))
        os.kill(os.getpid(), signal.SIGSTOP)
    return digest
c.save = save
"""


def queue_of(url: str, max_attempts: int = 3) -> Database:
    return new_queue(url, max_attempts=max_attempts, epochs=EPOCHS)


def records(db: Database) -> list[CheckpointFile]:
    with db.read() as s:
        return list(s.scalars(select(CheckpointFile).order_by(CheckpointFile.epoch.desc())))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The job run straight through: what every run below must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("straight")
    url = f"sqlite:///{tmp / 'kdrun.db'}"
    db = queue_of(url)
    finish(start_worker(url, tmp / "runs", until_empty=True, lease_seconds=LEASE))
    return metrics(db), result(db)


def run_a_while(url: str, runs: Path, db: Database, epochs: int) -> None:
    """A worker trains `epochs` epochs, then SIGTERM: the job goes back to the queue."""
    w = start_worker(url, runs, lease_seconds=LEASE)
    wait_for(lambda: job_row(db).epoch >= epochs, what=f"{epochs} epochs")
    w.send_signal(signal.SIGTERM)
    finish(w, timeout=60)
    assert job_row(db).state == "queued"


def flip_a_weight(path: Path) -> None:
    """Flip one byte inside the largest tensor's data (the file still unpickles)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


def test_stale_writer_cannot_publish_its_checkpoint(tmp_path, uninterrupted):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = queue_of(url)
    runs = tmp_path / "runs"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE)
    marker = tmp_path / "paused"
    env = {**os.environ, "KDRUN_TEST_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    opts = {"lease_seconds": LEASE, "poll_seconds": 0.2, "backoff_seconds": 0.0,
            "until_empty": True}
    stale = subprocess.Popen([sys.executable, "-c", WORKER, url, str(runs), json.dumps(opts)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _started.append(stale)
    wait_for(marker.exists, what="the stale training process to write epoch 2")
    stale_file = Path(marker.read_text())
    freeze(stale, url)  # its supervisor too: no heartbeats, the lease runs out
    try:
        finish(start_worker(url, runs, until_empty=True, lease_seconds=LEASE))
        done, rows, res = job_row(db), metrics(db), result(db)
    finally:
        stale.send_signal(signal.SIGCONT)
        trainer = children(stale.pid)
        for pid in trainer:
            os.kill(pid, signal.SIGCONT)  # it publishes now: the fenced write refuses it
    out = finish(stale)
    assert "lease lost" in out
    assert done.state == "succeeded" and outcomes(db) == ["expired", "succeeded"]
    after = job_row(db)
    assert (after.state, after.worker, after.epoch) == (done.state, done.worker, EPOCHS)
    assert metrics(db) == rows == uninterrupted[0]
    assert result(db) == res == uninterrupted[1]
    # The database names only the new owner's files, and they are intact.
    token = stale_file.name.split(".")[1]
    recs = records(db)
    assert recs and all(token not in r.path for r in recs)
    assert all(checkpoints.sha256(runs / r.path) == r.sha256 for r in recs)
    run_dir = runs / after.run_dir
    assert checkpoints.sha256(run_dir / "model.pt") == res["sha256"]
    assert not any(alive(p) for p in trainer)


def test_bit_flipped_checkpoint_is_detected_and_the_job_falls_back(tmp_path, uninterrupted):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = queue_of(url, max_attempts=1)
    runs = tmp_path / "runs"
    run_a_while(url, runs, db, epochs=2)
    newest, previous = records(db)[:2]
    flip_a_weight(runs / newest.path)
    assert checkpoints.load(runs / newest.path)  # still loads: only the digest can tell
    finish(start_worker(url, runs, until_empty=True, lease_seconds=LEASE))
    job = job_row(db)
    assert (job.state, job.attempts) == ("succeeded", 1)
    assert f"resumed from epoch {previous.epoch} instead" in job.notice
    assert "damaged" in job.notice and newest.path in job.notice
    log = (runs / job.run_dir / "train.log").read_text()
    assert f"resumed from epoch {previous.epoch} instead" in log
    shown = cli(tmp_path, "status").output
    assert "notices" in shown and "instead" in shown, shown
    assert metrics(db) == uninterrupted[0]
    assert result(db) == uninterrupted[1]
    left = sorted(p.name for p in (runs / job.run_dir).glob("*.pt"))
    assert len(left) == 3 and "model.pt" in left  # final weights (+ model.pt) and one epoch


def test_truncated_checkpoints_cost_no_attempt(tmp_path, uninterrupted):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = queue_of(url, max_attempts=1)
    runs = tmp_path / "runs"
    run_a_while(url, runs, db, epochs=2)
    for rec in records(db):
        path = runs / rec.path
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    finish(start_worker(url, runs, until_empty=True, lease_seconds=LEASE))
    job = job_row(db)
    assert (job.state, job.attempts) == ("succeeded", 1)
    assert job.notice.startswith("restarted from epoch 0")
    assert [r.epoch for r in epoch_rows(db)] == list(range(1, EPOCHS + 1))
    assert metrics(db) == uninterrupted[0]
    assert result(db) == uninterrupted[1]


def test_damaged_teacher_cache_is_rebuilt(tmp_path):
    import numpy as np

    from kdrun.train import teacher_cache as tc

    path = tmp_path / "x.npy"
    built: list[int] = []

    def build(tmp: Path) -> None:
        built.append(1)
        np.save(tmp.open("wb"), np.arange(1000, dtype=np.float32))

    assert tc.ensure(path, build, log=lambda m: None)
    assert not tc.ensure(path, build, log=lambda m: None) and len(built) == 1  # intact: reused
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x01  # one flipped bit in the logits
    path.write_bytes(bytes(raw))
    assert tc.ensure(path, build, log=lambda m: None) and len(built) == 2  # detected, rebuilt
    assert np.array_equal(np.load(path), np.arange(1000, dtype=np.float32))


def test_local_resume_skips_a_truncated_file_and_prunes(tmp_path):
    run_dir = tmp_path / "runs" / "job"
    for epoch in (1, 2, 3):
        checkpoints.save({"state": {"epoch": epoch}}, run_dir / checkpoints.epoch_name("a", epoch))
    newest = run_dir / checkpoints.epoch_name("a", 3)
    newest.write_bytes(newest.read_bytes()[:50])
    notes: list[str] = []
    obj, rec = checkpoints.resume(checkpoints.local_records(run_dir), run_dir.parent,
                                  lambda text, bad: notes.append(text))
    assert obj["state"]["epoch"] == 2 and rec.epoch == 2
    assert notes and "resumed from epoch 2 instead" in notes[0] and "truncated" in notes[0]
    checkpoints.prune(run_dir, keep=[rec.path])
    assert [p.name for p in run_dir.iterdir()] == [checkpoints.epoch_name("a", 2)]
