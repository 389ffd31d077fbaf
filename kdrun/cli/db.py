"""`kdrun db upgrade|current`: the schema version of a job database."""

from __future__ import annotations

import typer

from kdrun.cli.app import Settings, app, console
from kdrun.db import migrate

db_app = typer.Typer(help="Database schema: create or migrate, show the version.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create the schema or migrate it to the version this kdrun needs."""
    settings: Settings = ctx.obj
    db = settings.open(create=True, check=False)
    before = migrate.current(db)
    migrate.upgrade(db)
    after = migrate.current(db)
    msg = "already at" if before == after else f"upgraded {before or 'empty'} ->"
    console.print(f"{db.display_url}: {msg} {after}")


@db_app.command("current")
def current(ctx: typer.Context) -> None:
    """Show the schema version of the database and the one this kdrun needs."""
    db = ctx.obj.open(check=False)
    have, want = migrate.current(db), migrate.head()
    state = "up to date" if have == want else "behind: run `kdrun db upgrade`"
    console.print(f"{db.display_url}: schema {have or 'none'} (kdrun needs {want}; {state})")
