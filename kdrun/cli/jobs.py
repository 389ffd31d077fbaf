"""`kdrun enqueue | status | cancel | retry | reap`: filling the queue, watching it, fixing it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from kdrun import grid as grid_mod
from kdrun.cli.app import Settings, app, console
from kdrun.db import migrate, queue
from kdrun.db.clock import db_now
from kdrun.db.engine import Database
from kdrun.db.models import JOB_STATES, Job
from kdrun.errors import UserError
from kdrun.params import flatten
from kdrun.spec import JobSpec
from kdrun.teachers import registry_lookup


def plan_table(name: str, specs: list[JobSpec]) -> Table:
    t = Table(title=f"grid {name}: {len(specs)} jobs")
    for col in ("#", "kind", "teacher", "student", "method", "hyperparameters", "seed", "epochs"):
        t.add_column(col)
    for i, sp in enumerate(specs, 1):
        params = sp.config["method"]["params"]
        hp = ", ".join(f"{k}={v}" for k, v in flatten(params).items())
        t.add_row(str(i), sp.kind, sp.teacher or "-", sp.student, sp.method, hp,
                  str(sp.seed), str(sp.config["recipe"]["epochs"]))
    return t


@app.command()
def enqueue(
    ctx: typer.Context,
    grid: Path = typer.Option(..., "--grid", help="Grid YAML (or the name of a shipped grid)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, write nothing"),
) -> None:
    """Expand a grid into jobs and add the ones not queued yet (idempotent)."""
    settings: Settings = ctx.obj
    name, specs = grid_mod.load(grid, teacher_lookup=registry_lookup(settings.open,
                                                                     settings.runs_dir))
    if dry_run:
        console.print(plan_table(name, specs))
        teachers = sum(sp.kind == "teacher" for sp in specs)
        console.print(f"{len(specs)} jobs ({teachers} teacher, {len(specs) - teachers} student); "
                      "dry run: nothing written")
        return
    db = settings.open(create=True, check=False)
    if migrate.current(db) is None:  # a new database: create the schema
        migrate.upgrade(db)
    migrate.require_current(db)
    added, present = queue.enqueue(db, name, specs)
    if added == 0:
        console.print(f"grid {name}: all {present} jobs already queued; nothing added")
    else:
        console.print(f"grid {name}: added {added} jobs"
                      + (f" ({present} already present)" if present else "")
                      + f" to {db.display_url}")


def _label(j: Job) -> str:
    return f"{j.teacher + '->' if j.teacher else ''}{j.student} {j.method} s{j.seed}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _snapshot(db: Database, grid: str | None) -> tuple[float, list[Job]]:
    """The database clock and the jobs, in one read (which never blocks workers)."""
    with db.read() as s:
        now = s.execute(select(db_now())).scalar_one()
        q = select(Job).order_by(Job.id)
        if grid:
            q = q.where(Job.grid == grid)
        return now, list(s.execute(q).scalars())


def _job_json(j: Job) -> dict[str, Any]:
    return {"id": j.id, "grid": j.grid, "kind": j.kind, "teacher": j.teacher,
            "student": j.student, "method": j.method, "seed": j.seed, "state": j.state,
            "attempts": j.attempts, "max_attempts": j.max_attempts, "epoch": j.epoch,
            "epochs": j.config["recipe"]["epochs"], "worker": j.worker, "error": j.error,
            "progress": j.progress}


def render(db: Database, grid: str | None, failed_rows: int | None = None) -> Group:
    """Counts per state, the running jobs with their progress, the failed jobs."""
    now, jobs = _snapshot(db, grid)
    counts = Table(title=db.display_url + (f" (grid {grid})" if grid else ""))
    for state in JOB_STATES:
        counts.add_column(state, justify="right")
    counts.add_row(*[str(sum(j.state == state for j in jobs)) for state in JOB_STATES])
    parts: list[Any] = [counts]
    running = [j for j in jobs if j.state == "running"]
    if running:
        t = Table(title="running")
        for col in ("id", "job", "worker", "epoch", "loss", "img/s", "top-1", "ETA", "beat"):
            t.add_column(col, overflow="fold")
        for j in running:
            p = j.progress or {}
            t.add_row(str(j.id), _label(j), j.worker or "",
                      f"{j.epoch}/{j.config['recipe']['epochs']}",
                      f"{p['loss']:.4f}" if "loss" in p else "",
                      f"{p['images_per_s']:.0f}" if "images_per_s" in p else "",
                      f"{p['test_top1']:.2f}" if "test_top1" in p else "",
                      _duration(p.get("eta_s")),
                      f"{now - j.heartbeat_at:.0f}s ago" if j.heartbeat_at else "")
        parts.append(t)
    failed = [j for j in jobs if j.state == "failed"]
    if failed:
        shown = failed if failed_rows is None else failed[-failed_rows:]
        t = Table(title="failed" + (f" (last {len(shown)} of {len(failed)})"
                                    if len(shown) < len(failed) else ""))
        for col in ("id", "job", "attempts", "error"):
            t.add_column(col, overflow="fold")
        for j in shown:
            err = j.error.strip().splitlines()[0] if j.error and j.error.strip() else ""
            t.add_row(str(j.id), _label(j), f"{j.attempts}/{j.max_attempts}", err)
        parts.append(t)
    return Group(*parts)


@app.command()
def status(
    ctx: typer.Context,
    grid: str = typer.Option(None, "--grid", help="Only the jobs of this grid"),
    as_json: bool = typer.Option(False, "--json", help="Counts and every job as JSON"),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C"),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes"),
) -> None:
    """Jobs per state, running jobs with epoch, loss, throughput and ETA, failed jobs."""
    db: Database = ctx.obj.open()
    if as_json:
        _, jobs = _snapshot(db, grid)
        counts = {state: sum(j.state == state for j in jobs) for state in JOB_STATES}
        print(json.dumps({"database": db.display_url, "counts": counts,
                          "jobs": [_job_json(j) for j in jobs]}, indent=2))
        return
    if not watch:
        console.print(render(db, grid))
        return
    with Live(render(db, grid, failed_rows=10), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(db, grid, failed_rows=10), refresh=True)
        except KeyboardInterrupt:
            pass


def _which(ids: list[int] | None, grid: str | None, everything: bool, verb: str):
    if not ids and not grid and not everything:
        raise UserError(f"say which jobs to {verb}: job ids, --grid NAME, or --all")
    return queue.select_jobs(ids or (), grid)


@app.command()
def cancel(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Job ids"),
    grid: str = typer.Option(None, "--grid", help="Every job of this grid"),
    everything: bool = typer.Option(False, "--all", help="Every job"),
) -> None:
    """Cancel queued and running jobs; a running job's worker stops it within a heartbeat."""
    n = queue.cancel(ctx.obj.open(), _which(ids, grid, everything, "cancel"))
    console.print(f"cancelled {n} job(s)")


@app.command()
def retry(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Job ids"),
    grid: str = typer.Option(None, "--grid", help="Every failed job of this grid"),
    everything: bool = typer.Option(False, "--all", help="Every failed job"),
) -> None:
    """Put failed (and cancelled) jobs back in the queue with fresh attempts.

    They resume from their last checkpoint (delete a job's run directory to start over)."""
    n = queue.retry(ctx.obj.open(), _which(ids, grid, everything, "retry"))
    console.print(f"requeued {n} job(s)")


@app.command()
def reap(
    ctx: typer.Context,
    backoff_seconds: float = typer.Option(30.0, "--backoff-seconds", min=0.0,
                                          help="Delay before a reclaimed job runs again"),
) -> None:
    """Take back jobs whose worker stopped renewing its lease (workers also do this)."""
    requeued, failed = queue.reap_expired(ctx.obj.open(), backoff_seconds)
    console.print(f"expired leases: {requeued} job(s) back in the queue, "
                  f"{failed} failed (out of attempts)")
