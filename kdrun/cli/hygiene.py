"""`kdrun prune` and `kdrun delete`: take jobs out of the database (kdrun.db.hygiene)."""

from __future__ import annotations

import typer

from kdrun.cli.app import Settings, app, console
from kdrun.db import hygiene
from kdrun.errors import UserError

SHOWN = 20


def _show(doomed: hygiene.Doomed, verb: str, dry_run: bool) -> None:
    for jid, label, state, _ in doomed.jobs[:SHOWN]:
        console.print(f"  {jid:>6}  {state:<9} {label}", highlight=False, soft_wrap=True)
    if len(doomed.jobs) > SHOWN:
        console.print(f"  ... and {len(doomed.jobs) - SHOWN} more", highlight=False)
    for jid, why in sorted(doomed.kept.items())[:SHOWN]:
        console.print(f"  kept {jid}: {why}", highlight=False, soft_wrap=True)
    if dry_run:
        console.print(f"dry run: would {verb} {len(doomed.jobs)} job(s)"
                      + (f", keep {len(doomed.kept)}" if doomed.kept else "")
                      + "; nothing changed", highlight=False, soft_wrap=True)


def _remove(settings: Settings, doomed: hygiene.Doomed, runs: bool, verb: str) -> None:
    n = hygiene.remove(settings.open(), doomed.ids)
    msg = f"{verb} {n} job(s)"
    if doomed.kept:
        msg += f", kept {len(doomed.kept)} that others need"
    if runs:
        removed, skipped = hygiene.remove_run_dirs(settings.runs_dir,
                                                   [j[3] for j in doomed.jobs])
        msg += f", removed {removed} run folder(s) from {settings.runs_dir}"
        if skipped:
            msg += f" ({len(skipped)} outside it left alone: {skipped[0]}, ...)"
    console.print(msg, highlight=False, soft_wrap=True)


@app.command()
def prune(
    ctx: typer.Context,
    grid: str = typer.Option(None, "--grid", help="Only jobs of this grid"),
    failed: bool = typer.Option(False, "--failed", help="Also remove failed jobs"),
    runs: bool = typer.Option(False, "--runs", help="Also delete their run folders"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go, change nothing"),
) -> None:
    """Remove cancelled jobs (and failed ones with --failed) with their results and epochs.

    A job that a remaining job depends on (its teacher) or a registered teacher stays."""
    settings: Settings = ctx.obj
    doomed = hygiene.plan_prune(settings.open(), grid, failed)
    _show(doomed, "remove", dry_run)
    if not dry_run:
        _remove(settings, doomed, runs, "removed")


@app.command()
def delete(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Job ids"),
    grid: str = typer.Option(None, "--grid", help="Every job of this grid"),
    runs: bool = typer.Option(False, "--runs", help="Also delete their run folders"),
    yes: bool = typer.Option(False, "--yes", help="Also delete finished jobs' results"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go, change nothing"),
) -> None:
    """Delete jobs (any state but running) with their attempts, epochs and results.

    Refused, with nothing deleted, when a job is running (cancel it first) or another job
    still depends on it (delete its students too)."""
    settings: Settings = ctx.obj
    if not ids and not grid:
        raise UserError("say which jobs to delete: job ids and/or --grid NAME "
                        "(`kdrun prune` removes cancelled jobs)")
    doomed = hygiene.plan_delete(settings.open(), list(ids or ()), grid)
    done = sum(j[2] == "succeeded" for j in doomed.jobs)
    _show(doomed, "delete", dry_run)
    if dry_run:
        return
    if done and not yes:
        raise UserError(f"{done} of these {len(doomed.jobs)} jobs finished with results; "
                        "add --yes to delete them too (--dry-run lists them)")
    _remove(settings, doomed, runs, "deleted")
