"""kdrun's command line: `kdrun enqueue | worker | status | show | logs | report | db`.

Each command's module is imported when that command runs, not here (kdrun.cli.commands), so
`kdrun --help` and the light commands start in a fraction of a second."""

from kdrun.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
