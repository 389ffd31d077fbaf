"""`kdrun enqueue --dry-run [--jobs] [--format text|json]`: print a grid's plan (kdrun.plan)."""

from __future__ import annotations

from pathlib import Path

from kdrun import plan
from kdrun.cli.app import Settings, console
from kdrun.db import migrate
from kdrun.errors import UserError
from kdrun.spec import JobSpec

PLAN_FORMATS = ("text", "json")


def _states(settings: Settings) -> tuple[dict[str, str] | None, str]:
    """The database's job states by hash, or None where there is no database (yet)."""
    try:
        db = settings.open(check=False)
    except UserError:
        return None, settings.db_url
    if migrate.current(db) is None:
        return None, db.display_url
    return db, db.display_url  # type: ignore[return-value]


def show(settings: Settings, grid: Path, name: str, specs: list[JobSpec], jobs: bool,
         fmt: str) -> None:
    if fmt not in PLAN_FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(PLAN_FORMATS)}")
    db, where = _states(settings)
    states = plan.db_states(db, [sp.hash for sp in specs]) if db is not None else None
    if fmt == "json":
        print(plan.to_json(name, specs, states), end="")
        return
    from kdrun.grid import resolve_path

    source = str(grid) if resolve_path(grid) == grid else f"shipped grid {grid.stem}"
    if jobs:
        console.print(plan.jobs_table(specs, states))
    for line in plan.lines(name, source, specs, states, where):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    hint = "" if jobs else " (--jobs: every job; --format json: all of it, for scripts)"
    console.print(f"dry run: nothing written{hint}", highlight=False, soft_wrap=True)
