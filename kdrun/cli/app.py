"""The Typer application, global options, and user-error handling shared by all commands."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from kdrun import __version__
from kdrun.cli import helpfmt
from kdrun.db.engine import DEFAULT_DB, Database, default_url, redact, scrub
from kdrun.db.migrate import require_current
from kdrun.errors import UserError

helpfmt.install()  # `--help` shows TEXT/PATH, not <str>/<bool>

console = Console()
err_console = Console(stderr=True)


class Group(TyperGroup):
    """Turns user mistakes into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            # escaped: messages quote user text and pip extras (`kdrun[wandb]`) verbatim
            err_console.print(f"[red]error:[/] {escape(_scrub(ctx, str(e)))}", markup=True,
                              highlight=False, soft_wrap=True)
            ctx.exit(2)
        except OperationalError as e:
            settings = ctx.find_object(Settings)
            where = redact(settings.db_url) if settings else "the database"
            reason = str(e.orig).strip().splitlines()[0] if e.orig else "connection failed"
            err_console.print(f"[red]error:[/] cannot use {where}: {escape(_scrub(ctx, reason))}",
                              soft_wrap=True)
            ctx.exit(2)


def _scrub(ctx: typer.Context, text: str) -> str:
    """No password of the database URL (or PGPASSWORD) in what we print."""
    settings = ctx.find_object(Settings)
    return scrub(text, settings.db_url if settings else None)


app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
    help="Experiment runner for knowledge-distillation research.",
)


@dataclass
class Settings:
    db_url: str
    runs_dir: Path
    data_dir: Path

    def open(self, *, create: bool = False, check: bool = True,
             name: str | None = None) -> Database:
        """The database, refusing one whose schema is not current (unless check=False).
        `name`: how PostgreSQL lists this process (application_name)."""
        db = Database(self.db_url, create=create, name=name)
        if check:
            require_current(db)
        return db


def _version(value: bool) -> None:
    if value:
        print(f"kdrun {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db: str = typer.Option(
        None, "--db", envvar="KDRUN_DB", show_envvar=True, show_default=DEFAULT_DB,
        metavar="URL", help="Database URL (sqlite:///FILE or postgresql+psycopg://...)"
    ),
    runs_dir: Path = typer.Option(
        None, "--runs-dir", envvar="KDRUN_RUNS", show_envvar=True, show_default="runs/",
        metavar="DIR", help="Checkpoints and logs; every worker must see the same folder"
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", envvar="KDRUN_DATA", show_envvar=True, show_default="data/",
        metavar="DIR", help="Datasets"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print kdrun's version and exit"
    ),
) -> None:
    ctx.obj = Settings(
        db_url=db or default_url(),
        runs_dir=runs_dir or Path(os.environ.get("KDRUN_RUNS", "runs")),
        data_dir=data_dir or Path(os.environ.get("KDRUN_DATA", "data")),
    )
