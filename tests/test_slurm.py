"""kdrun on a real Slurm (`scripts/local-slurm.sh` starts a single-node one; `.ci/run` does
so before the tests). Skipped when `sinfo` does not answer with a usable node.

Slurm's clock is coarse (time limits in minutes, checked every ~30 s), so these take a minute
or two: a 2-task array drains a grid; a time limit hit mid-job (forced with `scontrol update
TimeLimit=0`) and an `scontrol requeue` both hand the job back with `attempts` unchanged, and
it then ends with the metrics of an uninterrupted run; `drain` and `cancel` hand jobs back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job, Pilot
from kdrun.grid import expand
from tests.helpers import cli, tiny_grid
from tests.test_worker import (
    children,
    epoch_rows,
    finish,
    metrics,
    outcomes,
    result,
    start_worker,
    stop_started,
    wait_for,
)


def slurm_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(
        s.startswith(("idle", "mixed", "allocated", "completing")) for s in out.stdout.split())


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(sys.platform != "linux" or not slurm_answers(),
                       reason="no Slurm answers here (scripts/local-slurm.sh starts one)"),
]
TIMEOUT = 300


@pytest.fixture(autouse=True)
def _nothing_outlives_its_test(tmp_path):
    yield
    stop_started()
    db = tmp_path / "kdrun.db"
    if db.exists():  # cancel any pilot a failed test left behind
        ids = [r.slurm_id for r in _pilots(Database(f"sqlite:///{db}"))]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _pilots(db: Database) -> list[Pilot]:
    with db.read() as s:
        return list(s.scalars(select(Pilot).order_by(Pilot.id)))


def students(url: str, seeds: list[int], **recipe: Any) -> Database:
    """Vanilla resnet8 students of a tiny synthetic grid (4 steps per epoch), one per seed."""
    r = {"epochs": 2, "batch_size": 16, "lr": 0.05, "lr_milestones": [], "eval_batch_size": 32,
         **recipe}
    grid = tiny_grid(recipe=r, methods=["vanilla"], seeds=seeds)
    grid["dataset"].update(train_size=64, test_size=32)
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [sp for sp in expand(grid)[1] if sp.kind == "student"])
    return db


def submit(tmp_path: Path, *args: str) -> str:
    r = cli(tmp_path, "slurm", "submit", "--idle-exit", "10", "--stop-within", "5", *args)
    assert r.exit_code == 0, r.output
    return r.output.split("job array ")[1].split(":")[0]


def jobs(db: Database) -> list[Job]:
    with db.read() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def in_squeue(array: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True)
    return bool(out.stdout.strip())


def while_running(tmp_path: Path, array: str, cond, what: str):
    """wait_for(cond), failing at once with the pilots' output when the array is gone."""
    def check():
        if cond():
            return True
        if not in_squeue(array) and not cond():
            logs = "".join(p.read_text() for p in
                           (tmp_path / "runs" / "slurm").glob(f"*/pilot-{array}_*.out"))
            raise AssertionError(f"pilots of {array} ended before {what}:\n{logs[-3000:]}")
        return False
    return wait_for(check, TIMEOUT, what)


def test_a_two_task_array_drains_a_grid(tmp_path):
    db = students(f"sqlite:///{tmp_path / 'kdrun.db'}", [0, 1])
    array = submit(tmp_path, "--workers", "2")
    script = next((tmp_path / "runs" / "slurm").glob("*/pilot.sbatch")).read_text()
    assert "#SBATCH --array=0-1" in script and str(tmp_path / "kdrun.db") not in script
    wait_for(lambda: not in_squeue(array), TIMEOUT, "the pilots to finish")
    assert [(j.state, j.attempts) for j in jobs(db)] == [("succeeded", 1)] * 2
    pilots = _pilots(db)
    assert sorted(p.slurm_id for p in pilots) == [f"{array}_0", f"{array}_1"]
    assert {p.state for p in pilots} == {"exited"} and all(p.worker for p in pilots)
    status = json.loads(cli(tmp_path, "slurm", "status", "--all", "--json").output)
    assert len(status) == 2 and {p["state"] for p in status} == {"exited"}


def freeze_trainer(db: Database, array: str) -> None:
    """Hold the pilot's training process mid-epoch (SIGSTOP) so Slurm's signal lands inside
    an epoch however fast or slow this machine is. Slurm sends SIGCONT with its SIGTERM."""
    (pilot,) = [p for p in _pilots(db) if p.array_id == array]
    for pid in children(int(pilot.worker.split(":")[1])):
        os.kill(pid, signal.SIGSTOP)


def test_time_limit_and_requeue_hand_the_job_back_and_it_ends_as_if_uninterrupted(tmp_path):
    epochs = 6
    db = students(f"sqlite:///{tmp_path / 'kdrun.db'}", [0], epochs=epochs)
    ref = students(f"sqlite:///{tmp_path / 'ref.db'}", [0], epochs=epochs)
    reference = start_worker(f"sqlite:///{tmp_path / 'ref.db'}", tmp_path / "ref-runs",
                             until_empty=True)

    # The time limit: Slurm signals every process of the pilot, then kills them.
    first = submit(tmp_path, "--workers", "1", "--grace", "0")
    while_running(tmp_path, first, lambda: jobs(db)[0].epoch >= 1, "an epoch")
    freeze_trainer(db, first)
    subprocess.run(["scontrol", "update", f"JobId={first}_0", "TimeLimit=0"], check=True)
    wait_for(lambda: not in_squeue(first), TIMEOUT, "the time limit")
    job = jobs(db)[0]
    assert (job.state, job.attempts, job.handbacks) == ("queued", 0, 1), job.error
    stopped_at = job.epoch
    assert 1 <= stopped_at < epochs

    # scontrol requeue (what pre-emption does too): handed back, and the pilot comes back.
    second = submit(tmp_path, "--workers", "1")
    while_running(tmp_path, second, lambda: jobs(db)[0].epoch > stopped_at, "a resumed epoch")
    freeze_trainer(db, second)
    subprocess.run(["scontrol", "requeue", f"{second}_0"], check=True)
    wait_for(lambda: jobs(db)[0].handbacks == 2, 60, "the requeue")
    assert jobs(db)[0].attempts in (0, 1)  # 1: the requeued pilot has it again already
    wait_for(lambda: jobs(db)[0].state == "succeeded", TIMEOUT, "the job to finish")
    job = jobs(db)[0]
    assert (job.attempts, job.handbacks) == (1, 2)
    assert outcomes(db) == ["requeued", "requeued", "succeeded"]
    assert [r.epoch for r in epoch_rows(db)] == list(range(1, epochs + 1))
    finish(reference, TIMEOUT)
    assert metrics(db) == metrics(ref)
    assert result(db) == result(ref)


def test_drain_and_cancel_hand_running_jobs_back(tmp_path):
    db = students(f"sqlite:///{tmp_path / 'kdrun.db'}", [0, 1], epochs=500)
    drained = submit(tmp_path, "--workers", "1")
    cancelled = submit(tmp_path, "--workers", "1")
    for array in (drained, cancelled):
        while_running(tmp_path, array, lambda: all(j.epoch >= 1 for j in jobs(db)), "training")
    status = cli(tmp_path, "slurm", "status")
    assert status.exit_code == 0 and "RUNNING" in status.output, status.output
    assert "resnet8 vanilla" in status.output  # the jobs each pilot holds, by label
    r = cli(tmp_path, "slurm", "drain", "--array", drained)
    assert r.exit_code == 0 and "draining 1 running pilot" in r.output, r.output
    r = cli(tmp_path, "slurm", "cancel", "--array", cancelled)
    assert r.exit_code == 0 and "cancelled 1 pilot" in r.output, r.output
    wait_for(lambda: not in_squeue(drained) and not in_squeue(cancelled), 120, "pilots to end")
    assert [(j.state, j.attempts) for j in jobs(db)] == [("queued", 0), ("queued", 0)]
    notes = {p.array_id: (p.state, p.note) for p in _pilots(db)}
    assert notes[drained] == ("exited", "drained")
    assert notes[cancelled][0] == "exited" and "SIGTERM" in notes[cancelled][1]
