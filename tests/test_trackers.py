"""Trackers: a job's epochs in TensorBoard and W&B (offline), through a real worker that is
killed and resumed; the exact TensorBoard history around a crash; a failing tracker never
fails the job; the tracker option is checked up front and is not part of a job's identity."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kdrun import grid, trackers
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.trackers import hook, store
from kdrun.trackers.base import RunContext, scalars
from kdrun.train.trainer import Hooks, Run, train
from kdrun.worker import WorkerOptions, work
from tests.helpers import cli, tiny_grid
from tests.tracker_files import tensorboard_scalars, wandb_run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses POSIX signals")

EPOCHS = 3
PER_EPOCH = {"train/loss", "train/top1", "test/top1", "test/top5", "loss/ce", "lr",
             "speed/images_per_s", "speed/epoch_time_s"}
WORKER = """
import json, sys
from pathlib import Path
from kdrun.db.engine import Database
from kdrun.worker import WorkerOptions, work
url, runs = sys.argv[1], Path(sys.argv[2])
work(Database(url), WorkerOptions(runs_dir=runs, data_dir=runs, lease_seconds=3.0,
                                  poll_seconds=0.2, backoff_seconds=0.0))
"""


def student_grid(**recipe: Any) -> dict[str, Any]:
    g = tiny_grid(methods=["vanilla"], seeds=[0],
                  recipe={"epochs": EPOCHS, "batch_size": 16, "lr": 0.05, "lr_milestones": [2],
                          "eval_batch_size": 32, **recipe})
    g["dataset"].update(train_size=64, test_size=32)
    return g


def student_config(**recipe: Any) -> dict[str, Any]:
    specs = grid.expand(student_grid(**recipe))[1]
    return next(sp.config for sp in specs if sp.kind == "student")


def wait_for(cond, timeout: float = 120.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_tracker_option_is_checked_and_not_part_of_the_job_identity(tmp_path, monkeypatch):
    plain = [sp.hash for sp in grid.expand(student_grid())[1]]
    tracked = grid.expand(student_grid(tracker=["tensorboard", "wandb"]))[1]
    assert [sp.hash for sp in tracked] == plain  # where a job reports is not what it computes
    assert all(sp.config["tracker"] == ["tensorboard", "wandb"] for sp in tracked)
    with pytest.raises(UserError, match="unknown tracker 'tb'; valid trackers are tensorboard"):
        grid.expand(student_grid(tracker="tb"))
    monkeypatch.setattr(trackers, "installed", lambda name: name != "wandb")
    with pytest.raises(UserError, match=r"recipe.tracker: tracker 'wandb' is not installed here; "
                                        r"pip install 'kdrun\[wandb\]'"):
        grid.expand(student_grid(tracker="tensorboard,wandb"))
    r = cli(tmp_path, "worker", "--cpu", "--tracker", "wandb")
    assert r.exit_code == 2 and "kdrun[wandb]" in r.output and "Traceback" not in r.output
    r = cli(tmp_path, "worker", "--cpu", "--tracker", "mlflow")
    assert r.exit_code == 2 and "valid trackers are tensorboard, wandb" in r.output


def test_worker_logs_each_epoch_to_tensorboard_and_wandb_and_a_killed_job_resumes_its_runs(
        tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "kdrun-test")
    url, runs = f"sqlite:///{tmp_path / 'kdrun.db'}", tmp_path / "runs"
    db = Database(url, create=True)
    migrate.upgrade(db)
    name, specs = grid.expand(student_grid(tracker=["tensorboard", "wandb"]))
    queue.enqueue(db, name, [sp for sp in specs if sp.kind == "student"])

    # First worker: killed (SIGKILL, its training process follows) once the job has stored an
    # epoch and both tracker runs.
    w1 = subprocess.Popen([sys.executable, "-c", WORKER, url, str(runs)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = wait_for(lambda: len(runs_of := store.stored_runs(db, 1)) == 2 and runs_of,
                         what="both tracker runs stored")
        w1.send_signal(signal.SIGKILL)
    finally:
        w1.kill()
        w1.wait()
    killed_at = _job(db).epoch
    assert 1 <= killed_at <= EPOCHS
    wait_for(lambda: _job(db).lease_expires_at is not None, what="the lease")
    summary = work(db, WorkerOptions(runs_dir=runs, data_dir=runs, lease_seconds=3.0,
                                     poll_seconds=0.2, backoff_seconds=0.0, until_empty=True))
    job = _job(db)
    assert summary.jobs == 1 and job.state == "succeeded", job.error

    runs_now = store.stored_runs(db, 1)
    assert set(runs_now) == {"tensorboard", "wandb"}
    assert runs_now["wandb"]["run_id"] == first["wandb"]["run_id"]  # the same W&B run
    assert runs_now["wandb"]["name"] == "resnet8 vanilla s0" == runs_now["tensorboard"]["name"]
    r = cli(tmp_path, "show", "1")  # `kdrun show` lists the job's tracker runs
    assert r.exit_code == 0 and first["wandb"]["run_id"] in r.output, r.output

    # TensorBoard: the run dir's log, one point per epoch and metric, whatever the kill did.
    logdir = runs / job.run_dir / "tensorboard"
    assert runs_now["tensorboard"]["run_id"] == f"{job.run_dir}/tensorboard"
    tb = tensorboard_scalars(logdir)
    assert PER_EPOCH <= set(tb)
    for tag in PER_EPOCH:
        assert [s for s, _ in tb[tag]] == list(range(1, EPOCHS + 1)), tag
    rows = {r.epoch: r for r in _epochs(db)}
    assert [v for _, v in tb["test/top1"]] == pytest.approx([rows[e].test_top1 for e in (1, 2, 3)])

    # W&B offline: one local run per attempt, the same id, the config, and per-epoch history.
    local = sorted((runs / job.run_dir / "wandb").glob("offline-run-*"))
    assert len(local) == 2
    assert all(d.name.endswith("-" + first["wandb"]["run_id"]) for d in local)
    got = [wandb_run(d) for d in local]  # the killed attempt's file may end mid-record
    assert got[1]["id"] == first["wandb"]["run_id"]
    assert got[1]["name"] == "resnet8 vanilla s0"
    assert got[1]["config"]["recipe"]["epochs"] == EPOCHS and got[1]["config"]["job_id"] == 1
    resumed = got[1]["history"]
    assert max(resumed) == EPOCHS and all(len(v) == 1 for v in resumed.values())
    assert min(resumed) > 1 and set(resumed) == set(range(min(resumed), EPOCHS + 1))
    assert resumed[EPOCHS][0]["test/top1"] == pytest.approx(rows[EPOCHS].test_top1)
    assert PER_EPOCH <= set(resumed[EPOCHS][0])


def _job(db: Database):
    from kdrun.db.models import Job

    with db.read() as s:
        return s.get(Job, 1)


def _epochs(db: Database):
    from sqlalchemy import select

    from kdrun.db.models import EpochMetric

    with db.read() as s:
        return list(s.scalars(select(EpochMetric).order_by(EpochMetric.epoch)))


class Stop(Exception):
    pass


def _attempt(config, run_dir: Path, db_rows: dict[int, dict], trackers: hook.TrackerSet,
             die_at: int | None = None, log_first: bool = True) -> dict | None:
    """One training process in-process: epochs go to `db_rows` (as the supervisor stores
    them), then to the trackers (as the child's hook does); `die_at` ends it there, before
    (log_first=False) or after logging that epoch."""
    def epoch_done(row: dict[str, Any], progress: dict[str, Any]) -> None:
        for e in [e for e in db_rows if e >= row["epoch"]]:  # record_epoch replaces these
            del db_rows[e]
        db_rows[row["epoch"]] = row
        if row["epoch"] == die_at and not log_first:
            raise Stop
        trackers.epoch(row)
        if row["epoch"] == die_at:
            raise Stop

    run = Run(config, run_dir, run_dir.parent)
    try:
        return train(run, Hooks(epoch_done=epoch_done))
    except Stop:
        return None


@pytest.mark.parametrize("crash", ["stored, never logged", "logged, trained again"])
def test_tensorboard_after_a_crash_holds_each_epoch_once_as_stored(tmp_path, crash, one_thread):
    """The two windows a crash can hit: an epoch stored but not yet logged (resume must fill
    it in), and an epoch logged but not checkpointed (trained again: one point, the new one)."""
    pytest.importorskip("tensorboard")
    config = student_config()
    run_dir = tmp_path / "runs" / "000001-job"
    ctx = RunContext(1, "resnet8 vanilla s0", config, run_dir, tmp_path / "runs")
    db_rows: dict[int, dict] = {}
    started: list[dict] = []
    _attempt(config, run_dir, db_rows,
             hook.TrackerSet(["tensorboard"], ctx, on_start=started.append), die_at=2,
             log_first=crash != "stored, never logged")
    if crash == "logged, trained again":  # its checkpoint never counted: epoch 2 runs again
        for f in run_dir.glob("*e0002*"):
            f.unlink()
    stored = {r["tracker"]: r for r in started}
    resumed = hook.TrackerSet(["tensorboard"], ctx, stored, history=list(db_rows.values()))
    assert _attempt(config, run_dir, db_rows, resumed) is not None
    resumed.finish(None, True)
    tb = tensorboard_scalars(run_dir / "tensorboard")
    for tag in PER_EPOCH:
        assert [s for s, _ in tb[tag]] == [1, 2, 3], (crash, tag)
    assert [v for _, v in tb["test/top1"]] == pytest.approx(
        [db_rows[e]["test_top1"] for e in (1, 2, 3)])
    assert [v for _, v in tb["loss/ce"]] == pytest.approx(
        [db_rows[e]["components"]["ce"] for e in (1, 2, 3)])


class Broken:
    """A tracker that fails at `where` (start or log), as a lost network or quota would."""

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where, self.calls = name, where, 0

    def start(self, ctx, first_epoch, stored):
        if self.where == "start":
            raise ConnectionError("api.wandb.ai: network unreachable")
        return {"run_id": "x"}

    def replay_from(self):
        return None

    def log(self, epoch, values):
        self.calls += 1
        raise RuntimeError("quota exceeded\nsecond line of a long error")

    def finish(self, summary, ok):
        raise RuntimeError("cannot finish")


def test_a_failing_tracker_never_fails_the_job(tmp_path, one_thread, monkeypatch):
    config = student_config()
    run_dir = tmp_path / "runs" / "000001-job"
    ctx = RunContext(1, "resnet8 vanilla s0", config, run_dir, tmp_path / "runs")
    lines: list[str] = []
    at_log, at_start = Broken("wandb", "log"), Broken("tensorboard", "start")
    ts = hook.TrackerSet([], ctx, log=lines.append, trackers=[at_start, at_log])
    result = _attempt(config, run_dir, {}, ts)
    ts.finish(result, True)
    assert result is not None and result["best_epoch"] >= 1  # the job finished normally
    assert at_log.calls == 1  # switched off after its first failure, not retried each epoch
    assert len(lines) == 2, lines  # one line per failing tracker, then silence
    assert lines[0].startswith("tracker tensorboard: start failed") and "network" in lines[0]
    assert "logging epoch 1 failed" in lines[1] and "quota exceeded" in lines[1]
    assert "second line" not in lines[1]

    # A tracker that is not installed in the training process: one line, the job goes on.
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(hook, "make", missing)
    lines.clear()
    ts = hook.TrackerSet(["wandb"], ctx, log=lines.append)
    ts.epoch({"epoch": 1, "lr": 0.1, "train_loss": 1.0, "components": {}, "train_top1": 1.0,
              "test_top1": 1.0, "test_top5": 1.0, "val_top1": None, "epoch_time_s": 1.0,
              "images_per_s": 1.0})
    ts.finish(None, True)
    assert len(lines) == 1 and "tracker wandb: import failed" in lines[0]


def test_only_rank_zero_logs(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    ctx = RunContext(1, "x", student_config(), tmp_path, tmp_path)
    assert not hook.TrackerSet(["tensorboard", "wandb"], ctx)
    monkeypatch.setenv("RANK", "0")
    assert hook.TrackerSet(["tensorboard"], ctx)


def test_scalars_name_every_metric_and_loss_component():
    row = {"epoch": 2, "lr": 0.05, "train_loss": 1.5, "components": {"ce": 1.0, "kd": 0.5},
           "train_top1": 40.0, "test_top1": 30.0, "test_top5": 70.0, "val_top1": 29.0,
           "epoch_time_s": 2.0, "images_per_s": 32.0}
    assert scalars(row) == {"train/loss": 1.5, "train/top1": 40.0, "test/top1": 30.0,
                            "test/top5": 70.0, "val/top1": 29.0, "loss/ce": 1.0, "loss/kd": 0.5,
                            "lr": 0.05, "speed/images_per_s": 32.0, "speed/epoch_time_s": 2.0}
