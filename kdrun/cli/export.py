"""`kdrun export`: dump jobs, results and per-epoch metrics for analysis in pandas."""

from __future__ import annotations

from pathlib import Path

import typer

from kdrun.cli import output
from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.lazy import lazy

export_mod = lazy("kdrun.report.export")  # pandas: loaded when exporting, not for --help

EXPORT_FORMATS = ("csv", "json")


@app.command()
def export(
    ctx: typer.Context,
    fmt: str = typer.Option(None, "--format",
                            help="csv (a folder of three files) | json (default: csv, or "
                                 "json for --out FILE.json)"),
    out: Path = typer.Option(None, "--out",
                             help="csv: a folder (default: export/), its files replaced; "
                                  "json: a file, replaced (default: stdout)"),
    grid: str = typer.Option(None, "--grid", help="Only jobs of this grid"),
) -> None:
    """Dump jobs, results and per-epoch metrics (joined by job_id) for pandas."""
    settings: Settings = ctx.obj
    fmt = output.choose_format(fmt, out, EXPORT_FORMATS, default="csv")
    if fmt == "csv" and out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; csv export writes a folder of three files "
                        "(jobs.csv, results.csv, epochs.csv): give a folder, or use "
                        "--format json for one file")
    db = settings.open()
    # epochs.csv's loss component names: a long scan inside the database, run meanwhile
    names = export_mod.names_soon(db) if fmt == "csv" and grid is None else None
    jobs, results = export_mod.jobs_and_results(db, grid)
    if grid and jobs.empty:
        raise UserError(f"--grid {grid!r}: no jobs of that grid in the database")
    if fmt == "csv":
        try:  # epochs.csv is streamed from the database (millions of rows)
            paths, n = export_mod.write_csv(db, jobs, results, out or Path("export"),
                                            every_job=grid is None, names=names)
        except OSError as e:
            raise UserError(f"--out {out or 'export'}: cannot write: {e.strerror or e}") from None
        console.print(f"wrote {', '.join(map(str, paths))} ({len(jobs)} jobs, "
                      f"{len(results)} results, {n} epochs)", soft_wrap=True)
        return
    frames = {"jobs": jobs, "results": results,
              "epochs": export_mod.load_epochs(db, list(jobs["job_id"]))}
    counts = ", ".join(f"{len(f)} {name}" for name, f in frames.items())
    text = export_mod.to_json(frames)
    if out is None:
        print(text, end="")
        return
    output.write_text(out, text)
    console.print(f"wrote {out} ({counts})", soft_wrap=True)
