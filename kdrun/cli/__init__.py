"""kdrun's command line: `kdrun enqueue | worker | status | report | db`."""

from kdrun.cli import db, export, jobs, models, report, teachers, work  # noqa: F401  (registration)
from kdrun.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
