"""`kdrun export`: dump jobs, results and per-epoch metrics for analysis in pandas."""

from __future__ import annotations

from pathlib import Path

import typer

from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.report import export as export_mod

EXPORT_FORMATS = ("csv", "json")


@app.command()
def export(
    ctx: typer.Context,
    fmt: str = typer.Option("csv", "--format", help="csv (a directory of three files) | json"),
    out: Path = typer.Option(None, "--out",
                             help="csv: a directory (default: export/); "
                                  "json: a file (default: stdout)"),
    grid: str = typer.Option(None, "--grid", help="Only jobs of this grid"),
) -> None:
    """Dump jobs, results and per-epoch metrics (joined by job_id) for pandas."""
    settings: Settings = ctx.obj
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(EXPORT_FORMATS)}")
    frames = export_mod.tables(settings.open(), grid)
    if grid and frames["jobs"].empty:
        raise UserError(f"--grid {grid!r}: no jobs of that grid in the database")
    counts = ", ".join(f"{len(f)} {name}" for name, f in frames.items())
    if fmt == "csv":
        paths = export_mod.write_csv(frames, out or Path("export"))
        console.print(f"wrote {', '.join(map(str, paths))} ({counts})")
        return
    text = export_mod.to_json(frames)
    if out is None:
        print(text, end="")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {out} ({counts})")
