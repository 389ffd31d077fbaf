"""The worker loop: claim a job, train it, record the outcome, repeat."""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from kdrun import __version__
from kdrun.data import num_classes
from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.train.trainer import Hooks, Interrupted, NonFiniteLoss, Run, train


@dataclass
class WorkerOptions:
    runs_dir: Path
    data_dir: Path
    device: str = "cpu"  # "cpu" or "cuda:N"
    lease_seconds: float = 300.0
    until_empty: bool = False
    max_jobs: int | None = None
    poll_seconds: float = 5.0
    num_workers: int = 0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_dir_name(job_id: int, config: dict) -> str:
    return f"{job_id:06d}-{config['student']}-{config['method']['name']}-s{config['seed']}"


def provenance(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"kdrun_version": __version__, "torch_version": torch.__version__,
            "device_name": name}


def _relative(path: str, base: Path) -> str:
    """Paths under the runs directory are stored relative to it, so machines that mount it
    elsewhere still find them."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def run_one(db: Database, claim: queue.Claim, opts: WorkerOptions, hooks: Hooks) -> str:
    """Train one claimed job and record its outcome; returns the job's new state."""
    device = torch.device(opts.device)
    name = claim.run_dir or run_dir_name(claim.job_id, claim.config)
    run_dir = opts.runs_dir / name
    queue.set_run_dir(db, claim, name, provenance(device))
    teacher_ckpt = opts.runs_dir / claim.teacher_checkpoint if claim.teacher_checkpoint else None
    run = Run(claim.config, run_dir, opts.data_dir, device, teacher_ckpt, opts.num_workers)
    try:
        result = train(run, hooks)
    except Interrupted as e:
        queue.requeue(db, claim, str(e))
        return "queued"
    except queue.LeaseLost:
        raise
    except (UserError, NonFiniteLoss) as e:  # deterministic: retrying cannot help
        return queue.fail(db, claim, f"{type(e).__name__}: {e}", retry=False)
    except Exception as e:
        return queue.fail(db, claim, f"{type(e).__name__}: {e}\n{traceback.format_exc()}",
                          retry=True)
    result["checkpoint"] = _relative(result["checkpoint"], opts.runs_dir)
    teacher = None
    if claim.config["kind"] == "teacher":
        c = claim.config
        teacher = {"name": f"{c['student']}-{c['dataset']['name']}-s{c['seed']}-{claim.job_id}",
                   "arch": c["student"], "dataset": c["dataset"]["name"],
                   "num_classes": num_classes(c["dataset"]), "path": result["checkpoint"],
                   "sha256": result["sha256"], "top1": result["best_top1"],
                   "top5": result["best_top5"], "source": "trained"}
    queue.succeed(db, claim, result, teacher)
    return "succeeded"


def job_hooks(db: Database, claim: queue.Claim, opts: WorkerOptions, on_step=None) -> Hooks:
    """Metrics go to the database (fenced by the lease); the lease is renewed as steps pass."""
    last_beat = [time.monotonic()]

    def step(epoch: int, done: int, total: int) -> None:
        if time.monotonic() - last_beat[0] > opts.lease_seconds / 4:
            queue.heartbeat(db, claim, opts.lease_seconds)
            last_beat[0] = time.monotonic()
        if on_step:
            on_step(epoch, done, total)

    def epoch_done(row, progress) -> None:
        queue.record_epoch(db, claim, row, progress)
        last_beat[0] = time.monotonic()

    return Hooks(epoch_done=epoch_done, step=step)


def work(db: Database, opts: WorkerOptions, on_step=None, log=print) -> int:
    """Claim and run jobs until told to stop; returns the number of jobs run."""
    me, done = worker_name(), 0
    while opts.max_jobs is None or done < opts.max_jobs:
        claim = queue.claim(db, me, opts.lease_seconds)
        if claim is None:
            if opts.until_empty and not queue.has_runnable_or_running(db):
                break
            time.sleep(opts.poll_seconds)
            continue
        c = claim.config
        label = f"job {claim.job_id}: {c['teacher']['name'] + '->' if c['teacher'] else ''}" \
                f"{c['student']} {c['method']['name']} seed {c['seed']}"
        log(f"[bold]claimed[/] {label} (attempt {claim.attempt})")
        hooks = job_hooks(db, claim, opts, on_step)
        try:
            state = run_one(db, claim, opts, hooks)
        except queue.LeaseLost as e:
            log(f"[yellow]lost lease[/] {label}: {e}")
            continue
        log(f"{'[green]' if state == 'succeeded' else '[red]'}{state}[/] {label}")
        done += 1
    return done
