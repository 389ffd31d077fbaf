"""The Typer application, global options, and user-error handling shared by all commands."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from kdrun.db.engine import Database, default_url, redact
from kdrun.db.migrate import require_current
from kdrun.errors import UserError

console = Console()
err_console = Console(stderr=True)


class Group(TyperGroup):
    """Turns user mistakes into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            err_console.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            ctx.exit(2)
        except OperationalError as e:
            settings = ctx.find_object(Settings)
            where = redact(settings.db_url) if settings else "the database"
            reason = str(e.orig).strip().splitlines()[0] if e.orig else "connection failed"
            err_console.print(f"[red]error:[/] cannot use {where}: {reason}", soft_wrap=True)
            ctx.exit(2)


app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Experiment runner for knowledge-distillation research.",
)


@dataclass
class Settings:
    db_url: str
    runs_dir: Path
    data_dir: Path

    def open(self, *, create: bool = False, check: bool = True) -> Database:
        """The database, refusing one whose schema is not current (unless check=False)."""
        db = Database(self.db_url, create=create)
        if check:
            require_current(db)
        return db


@app.callback()
def main_options(
    ctx: typer.Context,
    db: str = typer.Option(
        None, "--db", help="Database URL [env KDRUN_DB; default sqlite:///kdrun.db]"
    ),
    runs_dir: Path = typer.Option(
        None, "--runs-dir", help="Checkpoints and logs [env KDRUN_RUNS; default runs/]"
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Datasets [env KDRUN_DATA; default data/]"
    ),
) -> None:
    ctx.obj = Settings(
        db_url=db or default_url(),
        runs_dir=runs_dir or Path(os.environ.get("KDRUN_RUNS", "runs")),
        data_dir=data_dir or Path(os.environ.get("KDRUN_DATA", "data")),
    )
