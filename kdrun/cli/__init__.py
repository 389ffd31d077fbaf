"""kdrun's command line: `kdrun enqueue | worker | status | report | db`."""

from kdrun.cli import db, jobs, report, work  # noqa: F401  (command registration)
from kdrun.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
