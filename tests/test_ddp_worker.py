"""Multi-GPU (DDP) jobs through real workers: a `gpus: 2` job on `--cpu --slots 2` trains as
two gloo ranks that its supervisor starts, watches and kills as one. A 2-rank job records its
metrics once (run by the real `kdrun worker` CLI); stopped by SIGTERM (requeued, no attempt
used) and SIGKILLed mid-epoch (resumed by another worker) it ends with exactly the metrics
and weights of the uninterrupted run; losing the lease or one rank crashing leaves no process
of the job behind (by PID). Plus each rank's environment, the multi-node launch (its srun
command line, its refusal outside a big enough Slurm allocation, the pilot script, and the
srun path itself on the single-node Slurm here when one answers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.slurm.script import PilotSpec, render
from kdrun.worker import ranks
from kdrun.worker.supervisor import Slot, WorkerSettings, child_env, supervise
from tests.helpers import cli
from tests.test_worker import (
    _no_worker_outlives_its_test,  # noqa: F401  (autouse: no worker outlives a test)
    alive,
    children,
    epoch_rows,
    finish,
    job_row,
    metrics,
    outcomes,
    result,
    start_worker,
    student_spec,
    wait_for,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses POSIX signals and /proc")

EPOCHS = 4
TWO = {"slots": 2}  # a CPU worker with two units: a `gpus: 2` job runs as two ranks


def new_queue(url: str, max_attempts: int = 3, train_size: int | None = None) -> Database:
    """One vanilla resnet8 student with `gpus: 2` (train_size: make its epochs long)."""
    spec = student_spec(epochs=EPOCHS, lr_milestones=[2], gpus=2)
    if train_size:
        spec.config["dataset"]["train_size"] = train_size
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec])
    with db.write() as s:
        s.execute(update(Job).values(max_attempts=max_attempts))
    return db


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (ranks and their DataLoader workers)."""
    try:
        direct = children(pid)
    except FileNotFoundError:
        return []
    return [p for c in direct for p in (c, *descendants(c))]


def rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [int(v[5:]) for v in env if v.startswith(b"RANK=")]
    return found[0] if found else None


def ranks_of(worker: subprocess.Popen) -> dict[int, int]:
    """rank -> PID of the job's training processes, once both are up."""
    def both() -> dict[int, int] | None:
        found = {rank_of(p): p for p in children(worker.pid)}
        return found if {0, 1} <= found.keys() else None
    return wait_for(both, 60, "two rank processes")


def gone(pids: list[int], what: str) -> None:
    wait_for(lambda: not any(alive(p) for p in pids), 10, what)


def run_dir(db: Database, runs: Path) -> Path:
    return runs / job_row(db).run_dir


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2-rank job run straight through by a `kdrun worker --cpu --slots 2` of its own
    (the real CLI, started at first use and running alongside that test: the resume test
    comes first so both run at once)."""
    tmp = tmp_path_factory.mktemp("ddp-reference")
    url, runs = f"sqlite:///{tmp / 'kdrun.db'}", tmp / "runs"
    db = new_queue(url)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kdrun.cli import main; main()", "--db", url,
         "--runs-dir", str(runs), "--data-dir", str(runs), "worker", "--cpu", "--slots", "2",
         "--until-empty", "--lease-seconds", "5", "--backoff-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def done() -> tuple[Database, Path]:
        if proc.returncode is None:
            finish(proc)
        return db, runs

    yield done
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_two_rank_job_stopped_then_killed_resumes_exactly(tmp_path, reference):
    url, runs = f"sqlite:///{tmp_path / 'kdrun.db'}", tmp_path / "runs"
    db = new_queue(url, max_attempts=2)

    # SIGTERM mid-epoch: every rank finishes the epoch, the job goes back, no attempt used.
    w1 = start_worker(url, runs, **TWO)
    pids = list(ranks_of(w1).values())
    wait_for(lambda: job_row(db).epoch >= 1, what="an epoch")
    w1.send_signal(signal.SIGTERM)
    out = finish(w1, timeout=60)
    assert "attempt not counted" in out, out
    job = job_row(db)
    assert (job.state, job.attempts, job.handbacks) == ("queued", 0, 1)
    stopped_at = job.epoch
    assert 1 <= stopped_at < EPOCHS
    gone(pids, "both ranks' exit")

    # SIGKILL the worker mid-epoch: its ranks go too; another worker resumes after the lease.
    first_row = epoch_rows(db)[0].id
    w2 = start_worker(url, runs, **TWO)
    ranked = ranks_of(w2)
    wait_for(lambda: job_row(db).epoch > stopped_at, what="an epoch after resuming")
    pids = [p for r in ranked.values() for p in (r, *descendants(r))]
    w2.kill()
    w2.communicate()
    gone(pids, "orphaned ranks' exit")
    finish(start_worker(url, runs, until_empty=True, **TWO))

    job = job_row(db)
    assert (job.state, job.attempts) == ("succeeded", 2)  # the SIGTERM did not count
    assert outcomes(db) == ["requeued", "expired", "succeeded"]
    assert epoch_rows(db)[0].id == first_row  # epoch 1 was never trained again
    ref_db, ref_runs = reference()
    assert metrics(db) == metrics(ref_db)  # every epoch, bit for bit
    assert result(db) == result(ref_db)  # down to model.pt's sha256
    mine, theirs = state_dict(run_dir(db, runs) / "model.pt"), state_dict(
        run_dir(ref_db, ref_runs) / "model.pt")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_two_rank_job_records_its_metrics_once(reference):
    db, runs = reference()
    job = job_row(db)
    assert (job.state, job.attempts, job.gpus) == ("succeeded", 1, 2)
    assert "+" in job.worker  # the group's name lists both units: one job, two ranks
    assert [r[0] for r in metrics(db)] == list(range(1, EPOCHS + 1))  # one row per epoch
    assert outcomes(db) == ["succeeded"] and result(db)["best_epoch"] >= 1
    folder = run_dir(db, runs)
    assert f"epoch {EPOCHS}/{EPOCHS}" in (folder / "train.log").read_text()  # rank 0 reports
    rank1 = (folder / "train.rank1.log").read_text()
    assert "epoch" not in rank1 and "Traceback" not in rank1  # rank 1 trains, says nothing


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(v.split("=", 1) for v in raw.split("\0") if "=" in v)


def test_lease_loss_kills_every_rank(tmp_path, monkeypatch):
    url, runs = f"sqlite:///{tmp_path / 'kdrun.db'}", tmp_path / "runs"
    db = new_queue(url, train_size=4000)  # long epochs: still training when the lease goes
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")  # the worker's; no rank may see it
    w = start_worker(url, runs, **TWO)
    ranked = ranks_of(w)
    envs = [environ(ranked[r]) for r in (0, 1)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in envs] == [
        ("0", "0", "2"), ("1", "1", "2")]
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert envs[1]["MASTER_ADDR"] == "127.0.0.1" and envs[1]["CUDA_VISIBLE_DEVICES"] == ""
    assert not any("s3cret-pw" in v for e in envs for v in e.values())
    wait_for(lambda: job_row(db).kdrun_version is not None, 30, "rank 0 training")
    time.sleep(1.0)
    pids = [p for r in ranked.values() for p in (r, *descendants(r))]
    with db.write() as s:  # another worker took the job over
        s.execute(update(Job).values(lease_token="another worker's"))
    gone(pids, "every rank killed on lease loss")
    assert w.poll() is None  # the worker killed them, and lives on
    time.sleep(0.2)
    assert not children(w.pid)
    w.kill()
    out, _ = w.communicate()
    assert "lease lost" in out, out


def test_a_crashing_rank_takes_the_job_down(tmp_path):
    url, runs = f"sqlite:///{tmp_path / 'kdrun.db'}", tmp_path / "runs"
    db = new_queue(url, max_attempts=1, train_size=4000)
    w = start_worker(url, runs, until_empty=True, **TWO)
    ranked = ranks_of(w)
    wait_for(lambda: job_row(db).kdrun_version is not None, 30, "rank 0 training")
    time.sleep(1.0)
    pids = [p for r in ranked.values() for p in (r, *descendants(r))]
    os.kill(ranked[1], signal.SIGKILL)
    gone(pids, "every rank killed when one dies")
    finish(w, timeout=30)
    job = job_row(db)
    assert job.state == "failed" and job.error.startswith(
        "rank 1: training process killed by SIGKILL"), job.error
    assert outcomes(db) == ["failed"]


def test_every_rank_sees_all_of_the_jobs_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # a scheduler narrowed our view
    assert child_env(["cuda:2", "cuda:0"])["CUDA_VISIBLE_DEVICES"] == "6,4"  # rank r: cuda:r
    assert child_env("cuda:1")["CUDA_VISIBLE_DEVICES"] == "5"
    assert child_env(["cpu", "cpu"])["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("WORLD_SIZE", "8")  # the worker's own, e.g. started under torchrun
    monkeypatch.setenv("RANK", "3")
    assert not {"WORLD_SIZE", "RANK"} & child_env("cpu").keys()  # a 1-GPU job is world 1


def test_srun_command_of_a_multi_node_job():
    boot = [sys.executable, "-c", "boot"]
    assert ranks.srun_command(2, 8, True, boot) == [
        "srun", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--kill-on-bad-exit=1",
        "--input=all", "--export=ALL", "--gpus-per-node=4", *boot]
    assert "--gpus-per-node" not in " ".join(ranks.srun_command(2, 2, False, boot))
    env = ranks.srun_env({"CUDA_VISIBLE_DEVICES": "3", "A": "b"}, 8, 2, 29500)
    assert "CUDA_VISIBLE_DEVICES" not in env  # Slurm binds each node's GPUs
    assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["MASTER_PORT"]) == ("8", "4", "29500")
    task = {**env, "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    ranks.from_slurm(task)
    assert (task["RANK"], task["LOCAL_RANK"]) == ("5", "1")


def test_a_multi_node_job_needs_a_slurm_allocation_of_enough_nodes():
    why = ranks.multi_node_refusal(2, {})
    assert why and "not running inside a Slurm allocation" in why
    assert "--nodes-per-worker 2" in why
    one = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"}
    assert "has 1 node(s)" in (ranks.multi_node_refusal(2, one) or "")
    assert ranks.multi_node_refusal(2, {**one, "SLURM_JOB_NUM_NODES": "2"}) is None


def test_a_multi_node_job_fails_once_outside_a_big_enough_allocation(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        monkeypatch.delenv(var, raising=False)
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [student_spec(epochs=2, lr_milestones=[1], gpus=2, nodes=2)])
    # Workers outside an allocation never claim it (tests/test_ddp_scheduling.py); should one
    # get it anyway (its allocation ended, say), the supervisor refuses it once.
    assert queue.claim(db, "w", 30, backoff_s=0, idle=2, capacity=2) is None
    claim = queue.claim(db, "w", 30, backoff_s=0, idle=2, capacity=2, nodes=2)
    slot = Slot("w:cpu#0+1", "cpu", 1, ["cpu", "cpu"])
    settings = WorkerSettings(tmp_path / "runs", tmp_path / "runs", 30, 0)
    outcome = supervise(db, claim, slot, settings, threading.Event(), time.monotonic(),
                        print, lambda *a: None)
    job = job_row(db)
    assert outcome.state == job.state == "failed" and job.attempts == 1  # not retried
    assert job.error.splitlines() == [ranks.multi_node_refusal(2, {})]


def test_a_multi_node_pilot_asks_slurm_for_every_node_and_its_gpus(tmp_path):
    r = cli(tmp_path, "slurm", "submit", "--nodes-per-worker", "2", "--gpus-per-worker", "4",
            "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for d in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"):
        assert f"#SBATCH {d}" in lines
    assert not any("--gres" in x for x in lines)
    one = render(PilotSpec(gpus_per_worker=4), tmp_path, tmp_path, tmp_path).splitlines()
    assert "#SBATCH --gres=gpu:4" in one and "#SBATCH --ntasks-per-node=1" in one


def _slurm_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "idle" in out.stdout


def _marked(mark: str) -> list[int]:
    """PIDs of the processes whose environment holds `mark`."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(not _slurm_answers(), reason="no idle Slurm node here (local-slurm.sh)")
def test_srun_launched_ranks_train_and_leave_nothing_behind(tmp_path, monkeypatch):
    """The multi-node launch on the single-node Slurm here (the srun step forced onto one
    node, the only change): the ranks learn who they are from Slurm, train, rank 0 reports,
    and no rank outlives the job."""
    srun = ranks.srun_command
    monkeypatch.setattr(ranks, "srun_command", lambda n, world, gpus, argv: srun(
        1, world, gpus, argv))
    monkeypatch.setattr(ranks, "multi_node_refusal", lambda nodes, env=None: None)
    mark = f"KDRUN_TEST_MARK_{os.getpid()}_{time.time_ns()}"
    monkeypatch.setenv(mark, "1")  # travels to every rank (srun --export=ALL)
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [student_spec(epochs=1, lr_milestones=[], gpus=2, nodes=2)])
    # a job across machines holds every device of the worker's machine (here: its 2 slots)
    claim = queue.claim(db, "w", 30, backoff_s=0, idle=2, capacity=2, nodes=2)
    settings = WorkerSettings(tmp_path / "runs", tmp_path / "runs", 30, 0)
    outcome = supervise(db, claim, Slot("w:cpu#0+1", "cpu", 1, ["cpu", "cpu"]), settings,
                        threading.Event(), time.monotonic(), print, lambda *a: None)
    assert outcome.state == "succeeded", outcome
    assert [r[0] for r in metrics(db)] == [1] and outcomes(db) == ["succeeded"]
    folder = run_dir(db, tmp_path / "runs")
    assert "epoch 1/1" in (folder / "train.log").read_text()
    assert (folder / "train.rank1.log").exists()  # rank 1 opened its own log
    wait_for(lambda: not _marked(mark), 15, "every srun rank's exit")
