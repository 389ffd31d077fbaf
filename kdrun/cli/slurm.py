"""`kdrun slurm submit | status | drain | cancel`: worker pilots as a Slurm job array."""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table

from kdrun.cli.app import Settings, app, console, err_console
from kdrun.db.engine import Database, parse_url, sqlite_path
from kdrun.errors import UserError
from kdrun.slurm import commands, pilots
from kdrun.slurm.script import PilotSpec, render

MARGIN_S = 5  # seconds a worker needs after a cut to record the hand-back before SIGKILL

slurm_app = typer.Typer(help="Run workers on a Slurm cluster as a job array of pilots.")
app.add_typer(slurm_app, name="slurm")


def _absolute_url(url: str) -> str:
    """A SQLite path made absolute: the pilots may start in another directory."""
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is None or path.is_absolute():
        return url
    return parsed.set(database=str(path.resolve())).render_as_string(hide_password=False)


@slurm_app.command("submit")
def submit(
    ctx: typer.Context,
    workers: int = typer.Option(1, "--workers", help="Pilots: the job array's size"),
    gpus_per_worker: int = typer.Option(0, "--gpus-per-worker",
                                        help="GPUs per pilot (0: a CPU worker)"),
    nodes_per_worker: int = typer.Option(1, "--nodes-per-worker", help="Nodes per pilot"),
    cpus_per_worker: int = typer.Option(None, "--cpus-per-worker", min=1,
                                        help="CPUs per pilot (sbatch --cpus-per-task); "
                                             "with --nodes-per-worker, per task: G tasks on "
                                             "each node"),
    time_limit: str = typer.Option(None, "--time", help="Each pilot's time limit (sbatch "
                                                        "--time, e.g. 4:00:00)"),
    partition: str = typer.Option(None, "--partition", help="Slurm partition"),
    account: str = typer.Option(None, "--account", help="Slurm account"),
    max_running: int = typer.Option(None, "--max-running",
                                    help="At most this many pilots at once (array %K)"),
    grace: int = typer.Option(120, "--grace", help="SIGUSR1 this many seconds before the time "
                                                   "limit: jobs finish their epoch and go back"),
    stop_within: float = typer.Option(None, "--stop-within", min=0.0,
                                      help="After SIGTERM, cut an unfinished epoch within this "
                                           "many seconds [default: Slurm's KillWait - 5, or "
                                           "20 when unknown]"),
    idle_exit: float = typer.Option(300.0, "--idle-exit",
                                    help="A pilot with nothing runnable this long exits"),
    lease_seconds: float = typer.Option(None, "--lease-seconds", help="The workers' lease"),
    sbatch_arg: list[str] = typer.Option(None, "--sbatch-arg",
                                         help="An sbatch option passed through (repeatable), "
                                              "e.g. --sbatch-arg=--mem=16G"),
    setup: list[str] = typer.Option(None, "--setup", help="A shell line run before the worker "
                                                          "(repeatable), e.g. 'module load cuda'"),
    name: str = typer.Option("kdrun", "--name", help="The Slurm job name"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script, submit nothing"),
) -> None:
    """Write an sbatch script under the runs directory and submit it as a job array."""
    settings: Settings = ctx.obj
    spec = PilotSpec(workers, gpus_per_worker, nodes_per_worker, cpus_per_worker, time_limit,
                     partition, account, max_running, grace, stop_within, idle_exit,
                     lease_seconds, name, list(sbatch_arg or []), list(setup or []))
    limit = commands.kill_wait()
    if spec.stop_within_s is None:
        spec.stop_within_s = max(limit - MARGIN_S, 1) if limit else 20.0
    elif limit is not None and spec.stop_within_s > limit - MARGIN_S:
        raise UserError(f"--stop-within {spec.stop_within_s:g}: this cluster's KillWait is "
                        f"{limit} s, so jobs must be handed back sooner; use at most "
                        f"{max(limit - MARGIN_S, 0):g}")
    spec.check()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = settings.runs_dir / "slurm" / stamp
    for n in range(2, 1000):  # one folder per submission, even within a second
        if not folder.exists():
            break
        folder = settings.runs_dir / "slurm" / f"{stamp}-{n}"
    script = render(spec, settings.runs_dir, settings.data_dir, folder.resolve())
    if dry_run:
        print(script, end="")
        return
    db = settings.open()
    commands.require("sbatch")
    if db.is_sqlite:
        err_console.print("[yellow]note:[/] a SQLite database works only when every pilot "
                          "runs on this machine; use PostgreSQL on a cluster (README)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pilot.sbatch"
    path.write_text(script)
    array_id = commands.sbatch(str(path), _absolute_url(settings.db_url))
    pilots.submitted(db, array_id, workers, str(path))
    console.print(f"submitted Slurm job array {array_id}: {workers} pilot(s), script {path}; "
                  "follow with `kdrun slurm status`")


def _slurm_view(rows: list[pilots.PilotRow]) -> dict[str, tuple[str, str, str]]:
    arrays = sorted({r.array_id for r in rows})
    return commands.squeue(arrays)


@slurm_app.command("status")
def status(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Also pilots that exited"),
    as_json: bool = typer.Option(False, "--json", help="One object per pilot"),
) -> None:
    """Pilots (from the database and squeue) and the jobs each one holds."""
    db = ctx.obj.open()
    rows = pilots.listing(db, live_only=not all_)
    seen = _slurm_view([r for r in rows if r.state in pilots.LIVE])
    if as_json:
        print(json.dumps([{**r.__dict__, "slurm": dict(zip(("state", "elapsed", "where"),
                                                         seen.get(r.slurm_id, ()), strict=False))}
                          for r in rows], indent=1))
        return
    if not rows:
        console.print("no live pilots" + ("" if all_ else " (--all shows the ones that exited)"))
        return
    table = Table("pilot", "slurm", "kdrun", "worker", "jobs held", "note")
    for r in rows:
        state, elapsed, where = seen.get(r.slurm_id, ("-", "", ""))
        if state == "-" and r.state in pilots.LIVE:
            state = "gone"
        jobs = "\n".join(f"{j['id']} {j['label']} ({j['epoch']}/{j['epochs']})" for j in r.jobs)
        table.add_row(r.slurm_id, f"{state} {elapsed} {where}".strip(), r.state,
                      r.worker or "", jobs, r.note or "")
    console.print(table)


def _live(ctx: typer.Context, array: str | None) -> tuple[Database, list[str], list[str]]:
    """The live pilots (of one submission): Slurm ids of those running and those waiting."""
    db = ctx.obj.open()
    commands.require("scancel")
    rows = [r for r in pilots.listing(db, live_only=True) if array in (None, r.array_id)]
    running = [r.slurm_id for r in rows if r.state != "submitted"]
    waiting = [r.slurm_id for r in rows if r.state == "submitted"]
    return db, running, waiting


@slurm_app.command("drain")
def drain(ctx: typer.Context,
          array: str = typer.Option(None, "--array", help="Only this submission's pilots")
          ) -> None:
    """Pilots finish their epoch, hand their jobs back and exit; waiting pilots are withdrawn."""
    db, running, waiting = _live(ctx, array)
    if running:
        pilots.mark(db, running, "draining")
        commands.signal_batch(running, "USR1")
    if waiting:
        commands.cancel(waiting)
        pilots.mark(db, waiting, "exited", "drained before it started")
    console.print(f"draining {len(running)} running pilot(s); withdrew {len(waiting)} waiting")


@slurm_app.command("cancel")
def cancel(ctx: typer.Context,
           array: str = typer.Option(None, "--array", help="Only this submission's pilots")
           ) -> None:
    """scancel the pilots: their workers hand the running jobs back (Slurm's SIGTERM)."""
    db, running, waiting = _live(ctx, array)
    commands.cancel(running + waiting)
    if waiting:
        pilots.mark(db, waiting, "exited", "cancelled before it started")
    console.print(f"cancelled {len(running) + len(waiting)} pilot(s); running jobs go back to "
                  "the queue")

