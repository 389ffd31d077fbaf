"""`kdrun enqueue` and `kdrun status`: putting grids into the queue and looking at it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import select

from kdrun import grid as grid_mod
from kdrun.cli.app import Settings, app, console
from kdrun.db import migrate, queue
from kdrun.db.models import JOB_STATES, Job
from kdrun.spec import JobSpec


def plan_table(name: str, specs: list[JobSpec]) -> Table:
    t = Table(title=f"grid {name}: {len(specs)} jobs")
    for col in ("#", "kind", "teacher", "student", "method", "hyperparameters", "seed", "epochs"):
        t.add_column(col)
    for i, sp in enumerate(specs, 1):
        params = sp.config["method"]["params"]
        hp = ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""
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
    name, specs = grid_mod.load(grid)
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
        console.print(f"grid {name}: added {added} jobs" +
                      (f" ({present} already present)" if present else "") + f" to {db.display_url}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Jobs per state, plus the running and failed ones."""
    db = ctx.obj.open()
    counts = queue.counts(db)
    t = Table(title=f"{db.display_url}")
    for s in JOB_STATES:
        t.add_column(s, justify="right")
    t.add_row(*[str(counts.get(s, 0)) for s in JOB_STATES])
    console.print(t)
    with db.read() as s:
        rows = s.execute(select(Job).where(Job.state.in_(("running", "failed")))
                         .order_by(Job.state, Job.id)).scalars().all()
    if rows:
        d = Table(title="running and failed jobs")
        for col in ("id", "state", "job", "worker", "epoch", "attempts", "error"):
            d.add_column(col, overflow="fold")
        for j in rows:
            total = j.config["recipe"]["epochs"]
            err = (j.error or "").strip().splitlines()[0] if j.error else ""
            d.add_row(str(j.id), j.state, f"{j.teacher + '->' if j.teacher else ''}{j.student} "
                      f"{j.method} s{j.seed}", j.worker or "", f"{j.epoch}/{total}",
                      f"{j.attempts}/{j.max_attempts}", err)
        console.print(d)
