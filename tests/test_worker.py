"""Workers as real processes. On SQLite and PostgreSQL: a job stopped by SIGTERM (requeued,
no attempt used) and then SIGKILLed (reclaimed after its lease) ends with the metrics of an
uninterrupted run; a NaN loss fails once. On SQLite: a second SIGTERM exits at once, and a
frozen worker whose lease was taken writes nothing (the fencing underneath is tested on both
backends in test_queue.py). Plus the failure breaker, --gpu, and status/cancel/retry/reap.

Worker processes run `kdrun.worker.work` directly (the CLI's imports cost seconds each); the
CLI itself is exercised in-process at the end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from kdrun.cli import app
from kdrun.cli import work as work_cli
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, EpochMetric, Job, Result
from kdrun.errors import UserError
from kdrun.grid import expand
from kdrun.worker import FailureBreaker, Outcome, WorkerOptions, work
from tests.helpers import cli, tiny_grid

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses POSIX signals and /proc")

LEASE = 3.0
EPOCHS = 10
WORKER = """
import json, sys
from pathlib import Path
from kdrun.db.engine import Database
from kdrun.worker import WorkerOptions, work
url, runs, opts = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
summary = work(Database(url), WorkerOptions(runs_dir=runs, data_dir=runs, **opts),
               log=lambda m: print(m, flush=True))
print("stopped:", summary.stopped_because, flush=True)
"""


def student_spec(**recipe: Any):
    """The vanilla resnet8 student of a tiny synthetic grid (4 steps per epoch)."""
    r = {"epochs": EPOCHS, "batch_size": 16, "lr": 0.05, "lr_milestones": [3],
         "eval_batch_size": 32, **recipe}
    grid = tiny_grid(recipe=r, methods=["vanilla"], seeds=[0])
    grid["dataset"].update(train_size=64, test_size=32)
    return next(sp for sp in expand(grid)[1] if sp.kind == "student")


def new_queue(url: str, max_attempts: int = 3, **recipe: Any) -> Database:
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [student_spec(**recipe)])
    with db.write() as s:
        s.execute(update(Job).values(max_attempts=max_attempts))
    return db


_started: list[subprocess.Popen] = []


def stop_started() -> None:
    """Kill the workers a test started and left running (a failed test): trainers follow."""
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test():
    yield
    stop_started()


def start_worker(url: str, runs: Path, **opts: Any) -> subprocess.Popen:
    opts = {"lease_seconds": LEASE, "poll_seconds": 0.2, "backoff_seconds": 0.0, **opts}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, str(runs), json.dumps(opts)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _started.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(cond, timeout: float = 120, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_row(db: Database) -> Job:
    with db.read() as s:
        return s.get(Job, 1)


def epoch_rows(db: Database) -> list[EpochMetric]:
    with db.read() as s:
        return list(s.scalars(select(EpochMetric).order_by(EpochMetric.epoch)))


def outcomes(db: Database) -> list[str | None]:
    with db.read() as s:
        return list(s.scalars(select(Attempt.outcome).order_by(Attempt.id)))


def result(db: Database) -> dict[str, Any]:
    with db.read() as s:
        r = s.get(Result, 1)
        return {k: getattr(r, k) for k in ("best_top1", "best_top5", "best_epoch", "last_top1",
                                           "last_top5", "last5_top1", "sha256")}


def children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*")
            for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def freeze(proc: subprocess.Popen, url: str) -> None:
    """SIGSTOP a worker, but never inside a transaction: frozen there, it would hold the write
    lock every other worker waits for (a stalled machine, not the failure under test)."""
    probe = Database(url, busy_timeout_s=0.2)
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        try:
            with probe.write() as s:
                s.execute(update(Job).where(Job.id == 1).values(priority=Job.priority))
            return
        except OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError("the worker kept holding the write lock")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job run straight through by a worker of its own (started at first use, and
    running alongside that test): what every interrupted run must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{tmp / 'kdrun.db'}"
    db = new_queue(url)
    proc = start_worker(url, tmp / "runs", until_empty=True)
    _started.remove(proc)  # outlives the first test; stopped below

    def rows_and_result() -> tuple[list[tuple], dict[str, Any]]:
        if proc.returncode is None:
            finish(proc)
        return metrics(db), result(db)

    yield rows_and_result
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def metrics(db: Database) -> list[tuple]:
    return [(r.epoch, r.lr, r.train_loss, r.test_top1, r.test_top5) for r in epoch_rows(db)]


def test_job_survives_sigterm_then_sigkill_with_identical_metrics(db_url, tmp_path, reference):
    # Leases of 3 s, while a training process needs about that just to import torch:
    # no attempt expires unless its worker is killed, so renewals do not wait for training.
    db = new_queue(db_url, max_attempts=2)
    runs = tmp_path / "runs"

    # SIGTERM: the epoch finishes, is checkpointed, the job is requeued, no attempt used.
    w1 = start_worker(db_url, runs)
    wait_for(lambda: job_row(db).epoch >= 1, what="an epoch")
    w1.send_signal(signal.SIGTERM)
    out = finish(w1, timeout=60)
    assert "SIGTERM" in out and "attempt not counted" in out
    job = job_row(db)
    assert (job.state, job.attempts, job.lease_token) == ("queued", 0, None)
    stopped_at, first_row = job.epoch, epoch_rows(db)[0].id
    assert 1 <= stopped_at < EPOCHS

    # SIGKILL mid-job: its training process stops too, nothing else is written; once the
    # lease runs out, another worker reclaims the job and resumes it.
    w2 = start_worker(db_url, runs)
    wait_for(lambda: job_row(db).epoch > stopped_at, what="an epoch after resuming")
    if not db.is_sqlite:  # no transaction stays open while a job trains
        with db.read() as s:
            assert s.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start < now() - interval '2 seconds'"
            )).scalar() == 0
    trainers = children(w2.pid)
    assert trainers
    w2.kill()
    w2.communicate()
    wait_for(lambda: not any(alive(p) for p in trainers), 10, "orphaned training process exit")
    finish(start_worker(db_url, runs, until_empty=True))

    job = job_row(db)
    assert (job.state, job.attempts) == ("succeeded", 2)  # the SIGTERM did not count
    assert outcomes(db) == ["requeued", "expired", "succeeded"]
    assert epoch_rows(db)[0].id == first_row  # epoch 1 was never trained again
    ref_metrics, ref_result = reference()
    assert metrics(db) == ref_metrics  # every epoch, bit for bit
    assert result(db) == ref_result  # down to the final weights' sha256


@pytest.mark.slow
def test_second_sigterm_exits_at_once_and_the_lease_expires(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = new_queue(url)
    w1 = start_worker(url, tmp_path / "runs", lease_seconds=5.0)
    # Signal while the training process is still starting: a graceful stop would take seconds.
    trainers = wait_for(lambda: job_row(db).state == "running" and children(w1.pid),
                        what="a training process")
    w1.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    w1.send_signal(signal.SIGTERM)
    w1.communicate(timeout=10)
    assert w1.returncode == 128 + signal.SIGTERM and time.monotonic() - t0 < 2
    wait_for(lambda: not any(alive(p) for p in trainers), 10, "training process exit")
    assert job_row(db).state == "running"  # nothing written; the lease will run out
    assert queue.claim(db, "other", 60, backoff_s=0) is None
    reclaimed = wait_for(lambda: queue.claim(db, "other", 60, backoff_s=0), 15, "lease expiry")
    assert reclaimed.attempt == 2 and outcomes(db) == ["expired", None]


@pytest.mark.slow
def test_frozen_worker_whose_lease_was_taken_writes_nothing(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = new_queue(db_url)
    w1 = start_worker(db_url, tmp_path / "runs", until_empty=True)
    wait_for(lambda: job_row(db).epoch >= 1, what="an epoch")
    freeze(w1, db_url)  # no heartbeats now; its training process soon waits for an ack
    try:
        finish(start_worker(db_url, tmp_path / "runs", until_empty=True))
        done = job_row(db)
        rows = [(r.id, r.epoch, r.train_loss) for r in epoch_rows(db)]
        res = result(db)
    finally:
        w1.send_signal(signal.SIGCONT)
    out = finish(w1)
    assert "lease lost" in out
    assert done.state == "succeeded" and outcomes(db) == ["expired", "succeeded"]
    after = job_row(db)
    assert (after.state, after.worker, after.finished_at) == (
        done.state, done.worker, done.finished_at)
    assert [(r.id, r.epoch, r.train_loss) for r in epoch_rows(db)] == rows
    assert result(db) == res


def test_nan_loss_fails_once_with_the_error_and_traceback(db_url, tmp_path):
    db = new_queue(db_url, max_attempts=3, epochs=3, lr=1e12, lr_milestones=[])
    finish(start_worker(db_url, tmp_path / "runs", until_empty=True))
    job = job_row(db)
    assert (job.state, job.attempts) == ("failed", 1)
    assert job.error.startswith("NonFiniteLoss: non-finite training loss")
    assert "Traceback" in job.error and outcomes(db) == ["failed"]


def test_breaker_stops_a_worker_after_consecutive_suspect_failures(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    grid = tiny_grid(recipe={"epochs": 1, "lr_milestones": []}, methods=["vanilla"],
                     seeds=list(range(6)))
    queue.enqueue(db, "g", [sp for sp in expand(grid)[1] if sp.kind == "student"])

    def broken_machine(db, claim, *args, **kwargs) -> Outcome:
        queue.fail(db, claim, "RuntimeError: CUDA error: unknown error", retry=True)
        return Outcome("queued", "RuntimeError: CUDA error", suspect=True)

    monkeypatch.setattr("kdrun.worker.loop.supervise", broken_machine)
    lines: list[str] = []
    opts = WorkerOptions(tmp_path, tmp_path, until_empty=True, max_failures=3, poll_seconds=0.05)
    summary = work(db, opts, log=lines.append)
    assert summary.failed_over and summary.jobs == 3
    assert "3 jobs in a row failed" in summary.stopped_because
    assert queue.counts(db) == {"queued": 6}


def test_breaker_counts_only_consecutive_failures_retrying_could_fix():
    b = FailureBreaker(limit=3, window_s=60)
    flaky = Outcome("queued", "RuntimeError", suspect=True)
    assert b.record(flaky) is None and b.record(flaky) is None
    assert b.record(Outcome("succeeded", "")) is None  # a success resets the count
    assert b.record(flaky) is None and b.record(flaky) is None
    assert b.record(Outcome("failed", "ConfigError", suspect=False)) is None  # fails anywhere
    assert "3 jobs in a row failed" in b.record(flaky)
    slow = FailureBreaker(limit=2, window_s=0.0)
    assert slow.record(flaky) is None
    time.sleep(0.01)
    assert slow.record(flaky) is None  # not within the window


def test_gpu_option(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            work_cli.pick_devices("0", cpu=False)
        assert work_cli.pick_devices(None, cpu=False) == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert work_cli.pick_devices("2", cpu=False) == ["cuda:2"]
    assert work_cli.pick_devices("0,1,3", cpu=False) == ["cuda:0", "cuda:1", "cuda:3"]
    assert work_cli.pick_devices("all", cpu=False) == [f"cuda:{i}" for i in range(4)]
    for bad, msg in [("4", "no GPU 4"), ("x", "expected an index"), ("1,1", "listed twice")]:
        with pytest.raises(UserError, match=msg):
            work_cli.pick_devices(bad, cpu=False)
    with pytest.raises(UserError, match="not both"):
        work_cli.pick_devices("0", cpu=True)


def test_training_process_is_pinned_to_its_gpu(monkeypatch):
    from kdrun.worker.supervisor import child_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # what a scheduler gave this worker
    monkeypatch.setenv("KDRUN_DB", "postgresql+psycopg://u:secret@h/db")
    assert child_env("cuda:1")["CUDA_VISIBLE_DEVICES"] == "5"
    assert child_env("cpu")["CUDA_VISIBLE_DEVICES"] == ""
    assert "KDRUN_DB" not in child_env("cpu")


def test_status_json_cancel_retry_reap_commands(tmp_path):
    db = new_queue(f"sqlite:///{tmp_path / 'kdrun.db'}", max_attempts=1)
    claim = queue.claim(db, "w", lease_seconds=0.1)
    time.sleep(0.3)
    r = cli(tmp_path, "reap")
    assert r.exit_code == 0 and "0 job(s) back in the queue, 1 failed" in r.output, r.output
    status = json.loads(cli(tmp_path, "status", "--json").output)
    assert status["counts"]["failed"] == 1
    (job,) = status["jobs"]
    assert (job["state"], job["attempts"], job["max_attempts"]) == ("failed", 1, 1)
    assert "lease expired" in job["error"]
    assert cli(tmp_path, "retry").exit_code == 2  # says which jobs
    assert "requeued 1 job(s)" in cli(tmp_path, "retry", "--all").output
    assert "cancelled 1 job(s)" in cli(tmp_path, "cancel", str(claim.job_id)).output
    status = json.loads(cli(tmp_path, "status", "--json").output)
    assert status["counts"] == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0,
                                "cancelled": 1, "blocked": 0}
    assert cli(tmp_path, "status").exit_code == 0


def test_worker_refuses_a_gpu_that_is_not_there(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli(tmp_path, "worker", "--gpu", "0")
    assert r.exit_code == 2 and "CUDA is not available" in r.output


@pytest.mark.postgres
def test_postgres_password_never_shown(pg_url, tmp_path):
    db = new_queue(pg_url)
    url = db.url.set(password="s3cr3t-pw").render_as_string(hide_password=False)
    r = CliRunner().invoke(app, ["--db", url, "status", "--json"])  # trust auth: accepted
    assert r.exit_code == 0 and json.loads(r.output)["counts"]["queued"] == 1
    assert "s3cr3t-pw" not in r.output and "***" in r.output
    down = db.url.set(password="s3cr3t-pw", port=1).render_as_string(hide_password=False)
    r = CliRunner().invoke(app, ["--db", down, "status"])
    assert r.exit_code == 2 and "cannot use" in r.output and "s3cr3t-pw" not in r.output
