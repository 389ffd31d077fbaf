"""`kdrun enqueue | status | cancel | retry | reap`: filling the queue, watching it, fixing it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from kdrun import grid as grid_mod
from kdrun.cli import planview
from kdrun.cli.app import Settings, app, console, err_console
from kdrun.cli.present import age
from kdrun.db import migrate, queue
from kdrun.db.clock import db_now
from kdrun.db.engine import Database
from kdrun.db.models import JOB_STATES, Job
from kdrun.errors import UserError
from kdrun.headline import first_line
from kdrun.labels import job_label
from kdrun.params import flatten
from kdrun.teachers import registry_lookup

RENEWALS_PER_LEASE = 4  # as kdrun.worker.supervisor renews (not imported: status stays light)


@app.command()
def enqueue(
    ctx: typer.Context,
    grid: Path = typer.Option(..., "--grid", help="Grid YAML (or the name of a shipped grid)"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the plan (a summary), write nothing"),
    sets: list[str] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                   help="Override a grid key, value parsed as YAML; repeatable "
                                        "(--set recipe.epochs=1 --set seeds=[0])"),
    list_jobs: bool = typer.Option(False, "--jobs", help="--dry-run: also list every job"),
    fmt: str = typer.Option("text", "--format", help="--dry-run: text | json"),
    download: bool = typer.Option(False, "--download",
                                  help="Fetch a missing downloadable dataset (CIFAR-100) into "
                                       "--data-dir now"),
    no_data_check: bool = typer.Option(False, "--no-data-check",
                                       help="Enqueue although the dataset is not under "
                                            "--data-dir here (the workers' machines have it)"),
) -> None:
    """Expand a grid into jobs and add the ones not queued yet (idempotent).

    Refuses a grid whose dataset is not under --data-dir (unless --download fetches it or
    --no-data-check), so a missing dataset does not fail every job on the workers."""
    settings: Settings = ctx.obj
    name, specs = grid_mod.load(grid, teacher_lookup=registry_lookup(settings.open,
                                                                     settings.runs_dir),
                                overrides=sets or ())
    if not no_data_check:
        from kdrun.data import presence

        shared = {id(sp.config["dataset"]): sp.config["dataset"] for sp in specs}  # one a grid
        for ds in {json.dumps(d, sort_keys=True) for d in shared.values()}:
            if dry_run:
                why = presence.problem(json.loads(ds), settings.data_dir)
                if why:
                    err_console.print(f"[yellow]warning:[/] {why}; enqueue will refuse it "
                                      "(see --download, --no-data-check)", soft_wrap=True)
            else:
                presence.require(json.loads(ds), settings.data_dir, download)
    if dry_run:
        planview.show(settings, grid, name, specs, list_jobs, fmt)
        return
    db = settings.open(create=True, check=False)
    if migrate.current(db) is None:  # a new database: create the schema
        migrate.upgrade(db)
    migrate.require_current(db)
    added, present = queue.enqueue(db, name, specs)
    if added == 0:
        console.print(f"grid {name}: 0 new jobs, {present} already queued; nothing added")
    else:
        console.print(f"grid {name}: added {added} jobs"
                      + (f" ({present} already present)" if present else "")
                      + f" to {db.display_url}")


def _label(j: Job) -> str:
    return j.label or job_label(j.config)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _known_grids(db: Database) -> list[str]:
    with db.read() as s:
        return sorted(g for (g,) in s.execute(select(Job.grid).distinct()))


def check_grid(db: Database, grid: str | None) -> None:
    """`--grid NAME` must name a grid in the database (else: the valid names)."""
    if grid and grid not in (known := _known_grids(db)):
        raise UserError(f"--grid {grid!r}: no jobs of that grid in {db.display_url}; grids: "
                        f"{', '.join(known) or '(none: enqueue one first)'}")


JSON_COLUMNS = [getattr(Job, c) for c in (
    "id", "label", "grid", "kind", "teacher", "student", "method", "seed", "state", "attempts",
    "max_attempts", "epoch", "worker", "error", "run_dir", "notice")] + [
    # the stored JSON as text: spliced into the output as is, not decoded and re-encoded
    cast(Job.config, Text).label("config_text"), cast(Job.progress, Text).label("progress_text"),
    Job.config[("method", "params")].as_string().label("params_text"),
    Job.config[("recipe", "epochs")].as_integer().label("epochs")]
_SPLICE = {"progress": '"progress": "\\u0000progress"', "config": '"config": "\\u0000config"'}


def _state_counts(s: Session, where: list[Any]) -> dict[str, int]:
    return dict(s.execute(select(Job.state, func.count()).where(*where)
                          .group_by(Job.state)).all())


def _counts_and_notable(db: Database, grid: str | None) -> tuple[float, dict[str, int], list[Job]]:
    """The database clock, jobs per state (counted in SQL), and only the jobs `render` shows
    (running, failed, with a notice): 100k finished jobs are never loaded."""
    with db.read() as s:
        now = s.execute(select(db_now())).scalar_one()
        where = [Job.grid == grid] if grid else []
        counts = _state_counts(s, where)
        q = select(Job).where(*where, or_(Job.state.in_(("running", "failed")),
                                          Job.notice.is_not(None))).order_by(Job.id)
        return now, counts, list(s.execute(q).scalars())


def _job_json(j: Any, hyper: dict[str, Any], blocked_by: queue.Blocker | None = None,
              progress: Any = None, config: Any = None) -> dict[str, Any]:
    """A job's status object from a JSON_COLUMNS row (`progress` and `config` as given:
    decoded, or placeholders that `print_status_json` replaces with the stored text)."""
    label = j.label or job_label(json.loads(j.config_text))  # jobs from before labels
    return {"id": j.id, "label": label, "grid": j.grid, "kind": j.kind,
            "teacher": j.teacher, "student": j.student, "method": j.method,
            "hyperparameters": hyper, "seed": j.seed,
            "state": j.state,
            "blocked_by": None if blocked_by is None else {
                "id": blocked_by.job_id, "label": blocked_by.label, "state": blocked_by.state,
                "error": blocked_by.error},
            "attempts": j.attempts, "max_attempts": j.max_attempts, "epoch": j.epoch,
            "epochs": j.epochs, "worker": j.worker, "error": j.error,
            "progress": progress, "run_dir": j.run_dir, "config": config,
            "notice": j.notice}


def _worker_id(name: str | None) -> str:
    """`host:pid:device#slot` with the host's domain dropped (the table keeps it whole)."""
    if not name:
        return ""
    host, _, rest = name.partition(":")
    return f"{host.split('.')[0]}:{rest}" if rest else host


def _running_table(running: list[Job], now: float, width: int) -> Table:
    """Running jobs with progress. Below 120 columns the worker id goes under the job's
    label (whole: its column is at least as wide) and the loss is left out, so the table
    fits 80 columns without breaking ids."""
    wide = width >= 120
    t = Table(title="running", caption="beat: time since the lease was last renewed / its "
              "renewal interval; LATE: renewals stopped (a stalled or dead worker)")
    t.add_column("id", justify="right", no_wrap=True)
    workers = [_worker_id(j.worker) for j in running]
    t.add_column("job" if wide else "job / worker", overflow="fold",
                 min_width=None if wide else max(map(len, workers)))
    if wide:
        t.add_column("worker", no_wrap=True)
    for col in ("epoch", *(["loss"] if wide else []), "top-1", "ETA", "beat"):
        t.add_column(col, no_wrap=True, justify="right")
    for j, worker in zip(running, workers, strict=True):
        p = j.progress or {}
        interval = ((j.lease_expires_at - j.heartbeat_at) / RENEWALS_PER_LEASE
                    if j.lease_expires_at and j.heartbeat_at else None)
        loss = [f"{p['loss']:.3f}" if "loss" in p else ""] if wide else []
        job = [_label(j), worker] if wide else [f"{_label(j)}\n[dim]{worker}[/]"]
        t.add_row(str(j.id), *job, f"{j.epoch}/{j.config['recipe']['epochs']}", *loss,
                  f"{p['test_top1']:.2f}" if "test_top1" in p else "",
                  _duration(p.get("eta_s")),
                  age(now - j.heartbeat_at, interval) if j.heartbeat_at else "")
    return t


def render(db: Database, grid: str | None, failed_rows: int | None = None,
           width: int | None = None) -> Group:
    """Counts per state, the running jobs with their progress, blocked and failed jobs
    (laid out for `width` columns, by default the terminal's)."""
    now, per_state, jobs = _counts_and_notable(db, grid)
    stuck = queue.blockers(db, grid)
    counts = Table(title=db.display_url + (f" (grid {grid})" if grid else ""))
    for state in JOB_STATES:
        counts.add_column(state, justify="right")
    row = {state: str(per_state.get(state, 0)) for state in JOB_STATES}
    n_blocked = sum(len(b.blocked) for b in stuck)
    if n_blocked:
        row["queued"] += f" ({n_blocked} blocked)"
    counts.add_row(*row.values())
    parts: list[Any] = [counts]
    running = [j for j in jobs if j.state == "running"]
    if running:
        parts.append(_running_table(running, now, width or console.width))
    if stuck:
        t = Table(title="blocked: queued jobs waiting on a failed or cancelled job",
                  caption="fix the cause, then `kdrun retry ID` (the students then run)")
        for col in ("by job", "jobs", "its state and error"):
            t.add_column(col, overflow="fold")
        for b in stuck:
            t.add_row(f"{b.job_id} {b.label}", str(len(b.blocked)),
                      f"{b.state}: {b.error}" if b.state == "failed" else b.state)
        parts.append(t)
    units, wide = queue.too_wide(db, grid=grid)  # wider than any worker: they wait for ever
    if wide:
        parts.append(f"[yellow]waiting for a bigger worker[/]: "
                     f"{queue.too_wide_text(wide, units, limit=5)} (workers seen in the last "
                     "day; start one with more GPUs, or lower recipe.gpus)")
    failed = [j for j in jobs if j.state == "failed"]
    if failed:
        shown = failed if failed_rows is None else failed[-failed_rows:]
        t = Table(title="failed" + (f" (last {len(shown)} of {len(failed)})"
                                    if len(shown) < len(failed) else ""),
                  caption="traceback and log: `kdrun show ID`")
        for col in ("id", "job", "attempts", "error"):
            t.add_column(col, overflow="fold")
        for j in shown:
            t.add_row(str(j.id), _label(j), f"{j.attempts}/{j.max_attempts}",
                      first_line(j.error))
        parts.append(t)
    noticed = [j for j in jobs if j.notice]  # e.g. a damaged checkpoint skipped on resume
    if noticed:
        t = Table(title="notices" + (f" (last 10 of {len(noticed)})" if len(noticed) > 10 else ""))
        for col in ("id", "job", "state", "notice"):
            t.add_column(col, overflow="fold")
        for j in noticed[-10:]:
            t.add_row(str(j.id), _label(j), j.state, j.notice)
        parts.append(t)
    return Group(*parts)


def _json_counts(db: Database, grid: str | None) -> tuple[dict[str, int], dict[int, Any]]:
    """Jobs per state (counted in SQL) with `blocked`, and each blocked job's blocker."""
    by_job = {i: b for b in queue.blockers(db, grid) for i in b.blocked}
    with db.read() as s:
        per_state = _state_counts(s, [Job.grid == grid] if grid else [])
    counts = {state: per_state.get(state, 0) for state in JOB_STATES}
    counts["blocked"] = len(by_job)  # queued jobs that wait on a failed or cancelled job
    return counts, by_job


def _json_rows(db: Database, grid: str | None,
               chunk: int = 2000) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """JSON_COLUMNS rows with their flattened hyperparameters, a chunk at a time (100k jobs
    never sit in memory at once; each distinct `method.params` flattened once)."""
    flat: dict[str | None, dict[str, Any]] = {}
    with db.read() as s:
        q = select(*JSON_COLUMNS).where(*([Job.grid == grid] if grid else [])).order_by(Job.id)
        for part in s.execute(q.execution_options(yield_per=chunk)).partitions():
            for j in part:
                if j.params_text not in flat:
                    flat[j.params_text] = flatten(json.loads(j.params_text or "{}"))
            yield [(j, flat[j.params_text]) for j in part]


def _json_jobs(db: Database, grid: str | None,
               by_job: dict[int, Any]) -> Iterator[list[dict[str, Any]]]:
    """The jobs' JSON objects (config and progress decoded) a chunk at a time."""
    for part in _json_rows(db, grid):
        yield [_job_json(j, hyper, by_job.get(j.id), _loads(j.progress_text),
                         _loads(j.config_text)) for j, hyper in part]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def status_json(db: Database, grid: str | None) -> dict[str, Any]:
    counts, by_job = _json_counts(db, grid)
    return {"database": db.display_url, "counts": counts,
            "jobs": [j for part in _json_jobs(db, grid, by_job) for j in part]}


def _job_line(j: Any, hyper: dict[str, Any], blocked_by: queue.Blocker | None) -> str:
    """One job's compact JSON: json's C encoder for the small fields, the stored config and
    progress text spliced in verbatim (as json.dumps wrote them: decoding and re-encoding
    100k configs is most of the time)."""
    text = json.dumps(_job_json(j, hyper, blocked_by, "\0progress", "\0config"))
    text = text.replace(_SPLICE["progress"], '"progress": ' + (j.progress_text or "null"), 1)
    return text.replace(_SPLICE["config"], '"config": ' + (j.config_text or "null"), 1)


def print_status_json(db: Database, grid: str | None) -> None:
    """`status_json(db, grid)` as a document, streamed one job per line."""
    counts, by_job = _json_counts(db, grid)
    head = json.dumps({"database": db.display_url, "counts": counts}, indent=2)
    out = sys.stdout
    out.write(head[:-2] + ',\n  "jobs": [')
    first = True
    for part in _json_rows(db, grid):
        # One compact object per line: json's C encoder (indent= falls back to Python,
        # ten times slower on 100k jobs), and still greppable.
        text = ",".join("\n    " + _job_line(j, hyper, by_job.get(j.id)) for j, hyper in part)
        out.write(text if first else "," + text)
        first = False
    out.write("\n  ]\n}\n" if not first else "]\n}\n")
    out.flush()


@app.command()
def status(
    ctx: typer.Context,
    grid: str = typer.Option(None, "--grid", help="Only the jobs of this grid"),
    as_json: bool = typer.Option(False, "--json", help="Counts and every job as JSON; with "
                                 "--watch, one compact JSON object per line per refresh"),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C"),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes"),
) -> None:
    """Jobs per state, running jobs with epoch, loss and ETA, blocked and failed jobs."""
    db: Database = ctx.obj.open()
    check_grid(db, grid)
    if as_json and watch:  # a stream: one line per refresh, for `| jq` or a log
        try:
            while True:
                print(json.dumps({"time": time.time(), **status_json(db, grid)}), flush=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return
    if as_json:
        print_status_json(db, grid)
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


def _which(db: Database, ids: list[int] | None, grid: str | None, everything: bool,
           verb: str, states: tuple[str, ...]) -> tuple[Any, list[str]]:
    """The selection to act on, refusing one that names nothing the verb can change (a
    missing id, an unknown grid, only jobs in other states); plus notes on jobs left alone."""
    if not ids and not grid and not everything:
        raise UserError(f"say which jobs to {verb}: job ids, --grid NAME, or --all")
    check_grid(db, grid)
    which = queue.select_jobs(ids or (), grid)
    with db.read() as s:
        found = dict(s.execute(select(Job.id, Job.state).where(which)).all())
    missing = sorted(set(ids or ()) - set(found))
    if missing:
        raise UserError(f"no job {', '.join(map(str, missing))} in {db.display_url} "
                        "(`kdrun status` lists the jobs)")
    others = {i: st for i, st in found.items() if st not in states}
    if len(others) == len(found):
        what = (", ".join(f"job {i} is {st}" for i, st in sorted(others.items())[:5])
                if ids else f"none of the {len(found)} selected jobs is")
        done = {"cancel": "cancelled", "retry": "retried"}[verb]
        raise UserError(f"nothing to {verb}: {what}"
                        + ("" if ids else f" {' or '.join(states)}")
                        + f"; only {' or '.join(states)} jobs can be {done}")
    notes = []
    if ids and others:
        notes.append("left alone: " + ", ".join(f"job {i} ({st})"
                                                for i, st in sorted(others.items())))
    return which, notes


@app.command()
def cancel(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Job ids"),
    grid: str = typer.Option(None, "--grid", help="Every job of this grid"),
    everything: bool = typer.Option(False, "--all", help="Every job"),
) -> None:
    """Cancel queued and running jobs; a running job's worker stops it within a heartbeat."""
    db = ctx.obj.open()
    which, notes = _which(db, ids, grid, everything, "cancel", ("queued", "running"))
    n = queue.cancel(db, which)
    console.print(f"cancelled {n} job(s)" + "".join(f"; {x}" for x in notes))


@app.command()
def retry(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Job ids"),
    grid: str = typer.Option(None, "--grid", help="Every failed job of this grid"),
    everything: bool = typer.Option(False, "--all", help="Every failed job"),
) -> None:
    """Put failed (and cancelled) jobs back in the queue with fresh attempts.

    They resume from their last checkpoint (delete a job's run directory to start over).
    Jobs that were blocked by them run once they succeed."""
    db = ctx.obj.open()
    which, notes = _which(db, ids, grid, everything, "retry", ("failed", "cancelled"))
    before = {i for b in queue.blockers(db) for i in b.blocked}
    n = queue.retry(db, which)
    freed = len(before - {i for b in queue.blockers(db) for i in b.blocked})
    console.print(f"requeued {n} job(s)" + "".join(f"; {x}" for x in notes)
                  + (f"; {freed} job(s) blocked by them will run once they succeed"
                     if freed else ""))


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
