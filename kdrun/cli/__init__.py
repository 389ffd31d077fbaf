"""kdrun's command line: `kdrun enqueue | worker | status | show | logs | report | db`."""

from kdrun.cli import (  # noqa: F401  (registration)
    db,
    export,
    grids,
    hygiene,
    jobs,
    methods,
    models,
    report,
    show,
    slurm,
    teachers,
    work,
)
from kdrun.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
