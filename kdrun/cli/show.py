"""`kdrun show JOB` and `kdrun logs JOB [-f]`: everything about one job, for debugging a
failure without opening the database -- its configuration, every attempt with its error and
traceback, its metrics, where its files are -- and its training log, followed live."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from kdrun.cli.app import Settings, app, console
from kdrun.cli.present import blocked_line, stamp
from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, EpochMetric, Job, Result
from kdrun.errors import UserError
from kdrun.headline import first_line
from kdrun.labels import job_label

LOG = "train.log"  # as kdrun.worker.rundir writes it (not imported: no worker imports here)
JOB_FILE = "job.yaml"
EPOCHS_SHOWN = 5


def _job(db: Database, job_id: int) -> Job:
    with db.read() as s:
        job = s.get(Job, job_id)
        if job is None:
            last = s.execute(select(Job.id).order_by(Job.id.desc()).limit(1)).scalar()
            raise UserError(f"no job {job_id} in {db.display_url}"
                            + (f"; job ids run 1..{last}" if last else "; the queue is empty"))
        return job


def _when(t: float | None) -> str:
    return stamp(t) if t else "-"


def _tracker_runs(db: Database, job_id: int) -> list[str]:
    """The job's experiment-tracker runs, where kdrun records them (kdrun.trackers)."""
    try:
        from kdrun.trackers.store import describe, job_tracker_runs
    except ImportError:
        return []
    return [describe(r) for r in job_tracker_runs(db, job_id)]


def _facts(db: Database, job: Job, runs_dir: Path) -> list[tuple[str, str]]:
    rows = [("state", job.state + (f" (attempt {job.attempts}/{job.max_attempts})"
                                   if job.attempts else "")),
            ("grid", job.grid), ("kind", job.kind)]
    if job.depends_on_id:
        rows.append(("teacher job", str(job.depends_on_id)))
    if job.state == "queued":
        for b in queue.blockers(db):
            if job.id in b.blocked:
                rows.append(("blocked", blocked_line(b, count=False)
                             + f"; `kdrun retry {b.job_id}` once its cause is fixed"))
        units, wide = queue.too_wide(db) if job.gpus > 1 else (None, [])
        if units is not None and job.id in dict(wide):
            rows.append(("waiting", queue.too_wide_text([(job.id, job.gpus)], units)
                         + " (workers seen in the last day): it runs once a worker with "
                         f"{job.gpus} GPUs claims"))
    if job.worker:
        rows.append(("worker", job.worker))
    rows += [("created", _when(job.created_at)), ("started", _when(job.started_at)),
             ("finished", _when(job.finished_at))]
    if job.kdrun_version:
        rows.append(("ran with", f"kdrun {job.kdrun_version}, torch {job.torch_version}, "
                                 f"{job.device_name}"))
    if job.run_dir:
        folder = runs_dir / job.run_dir
        rows += [("run folder", str(folder)), ("log", str(folder / LOG)),
                 ("config file", str(folder / JOB_FILE))]
        if not folder.exists():
            rows.append(("note", f"{folder} is not on this machine: every worker and this "
                                 "command must share --runs-dir (KDRUN_RUNS)"))
    else:
        rows.append(("run folder", "(not started yet)"))
    rows += [("tracker", r) for r in _tracker_runs(db, job.id)]
    return rows


def _attempts(db: Database, job_id: int) -> list[Attempt]:
    with db.read() as s:
        return list(s.execute(select(Attempt).where(Attempt.job_id == job_id)
                              .order_by(Attempt.number, Attempt.id)).scalars())


def _metrics(db: Database, job_id: int) -> tuple[Result | None, list[EpochMetric]]:
    with db.read() as s:
        res = s.get(Result, job_id)
        epochs = list(s.execute(select(EpochMetric).where(EpochMetric.job_id == job_id)
                                .order_by(EpochMetric.epoch.desc()).limit(EPOCHS_SHOWN))
                      .scalars())
    return res, epochs[::-1]


def show_text(db: Database, job_id: int, runs_dir: Path) -> list[Any]:
    """What `kdrun show` prints, as renderables (tests read them through the CLI)."""
    job = _job(db, job_id)
    out: list[Any] = []
    facts = Table(title=f"job {job.id}: {job.label or job_label(job.config)}",
                  show_header=False, title_justify="left")
    facts.add_column(no_wrap=True, style="bold")
    facts.add_column(overflow="fold")
    for k, v in _facts(db, job, runs_dir):
        facts.add_row(k, escape(v))
    out.append(facts)
    out.append("[bold]config[/] (resolved; also job.yaml in the run folder)")
    out.append(escape(yaml.safe_dump(job.config, sort_keys=False).rstrip()))
    attempts = _attempts(db, job.id)
    if attempts:
        t = Table(title="attempts", title_justify="left")
        for col in ("#", "worker", "started", "ended", "outcome", "error"):
            t.add_column(col, overflow="fold")
        for a in attempts:
            t.add_row(str(a.number), a.worker, _when(a.started_at), _when(a.ended_at),
                      a.outcome or "running", escape(first_line(a.error)))
        out.append(t)
    for a in attempts:
        if a.error and "\n" in a.error.strip():
            out.append(f"[bold]attempt {a.number} error[/] ({a.outcome}):")
            out.append(escape(a.error.rstrip()))
    if job.error and not any(a.error == job.error for a in attempts):
        out.append("[bold]error[/]:")
        out.append(escape(job.error.rstrip()))
    res, epochs = _metrics(db, job.id)
    if res is not None:
        out.append(f"[bold]result[/]: best top-1 {res.best_top1:.2f} (epoch {res.best_epoch}, "
                   f"by {res.selection_split}), top-5 {res.best_top5:.2f}; last top-1 "
                   f"{res.last_top1:.2f}; {res.images_per_s:.0f} img/s, "
                   f"{res.wall_time_s:.0f} s" + (f"; checkpoint {res.checkpoint}"
                                                 if res.checkpoint else ""))
    if epochs:
        t = Table(title=f"last {len(epochs)} epoch(s)", title_justify="left")
        for col in ("epoch", "lr", "loss", "train top-1", "test top-1", "s"):
            t.add_column(col, justify="right")
        for m in epochs:
            t.add_row(str(m.epoch), f"{m.lr:g}", f"{m.train_loss:.4f}", f"{m.train_top1:.2f}",
                      f"{m.test_top1:.2f}", f"{m.epoch_time_s:.1f}")
        out.append(t)
    return out


@app.command()
def show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB", help="Job id (from `kdrun status`)"),
) -> None:
    """Everything about one job: config, attempts with errors and tracebacks, metrics, paths."""
    settings: Settings = ctx.obj
    for part in show_text(settings.open(), job_id, settings.runs_dir):
        console.print(part, soft_wrap=isinstance(part, str), highlight=False)


def _log_path(db: Database, job_id: int, runs_dir: Path) -> Path | None:
    job = _job(db, job_id)
    return runs_dir / job.run_dir if job.run_dir else None


@app.command()
def logs(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB", help="Job id (from `kdrun status`)"),
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Keep printing as the job writes, until it ends"),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between polls"),
) -> None:
    """Print a job's training log (RUNS/<job>/train.log); `-f` follows it live."""
    settings: Settings = ctx.obj
    db = settings.open()
    folder = _log_path(db, job_id, settings.runs_dir)
    if folder is None and not follow:
        raise UserError(f"job {job_id} has not started yet ({_job(db, job_id).state}): no log; "
                        f"`kdrun logs {job_id} -f` waits for it")
    if folder is not None and not (folder / LOG).exists() and not follow:
        raise UserError(f"no log at {folder / LOG}: every worker and this command must share "
                        "--runs-dir (KDRUN_RUNS); the job ran on "
                        f"{_job(db, job_id).worker or 'another machine'}")
    pos = 0
    try:
        while True:
            if folder is None:
                folder = _log_path(db, job_id, settings.runs_dir)
            path = folder / LOG if folder is not None else None
            if path is not None and path.exists():
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                pos += len(chunk)
                if chunk:
                    print(chunk.decode(errors="replace"), end="", flush=True)
            if not follow:
                return
            if _job(db, job_id).state not in ("queued", "running"):
                if path is not None and path.exists() and path.stat().st_size > pos:
                    continue  # the last lines, written just before the job ended
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
