"""`kdrun report`: the papers' tables from the results database."""

from __future__ import annotations

from pathlib import Path

import typer

from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.report import formats
from kdrun.report import top1 as top1_mod
from kdrun.report.load import load_jobs

TABLES = ("top1", "top5")


@app.command()
def report(
    ctx: typer.Context,
    table: str = typer.Option("top1", "--table", help=f"One of: {', '.join(TABLES)}"),
    fmt: str = typer.Option("table", "--format", help=f"One of: {', '.join(formats.FORMATS)}"),
    metric: str = typer.Option("best", "--metric", help="best | last | last5 (epoch to report)"),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of the terminal"),
) -> None:
    """Aggregate results over seeds into a paper-style table."""
    settings: Settings = ctx.obj
    if table not in TABLES:
        raise UserError(f"--table {table!r}: valid tables are {', '.join(TABLES)}")
    if fmt not in formats.FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(formats.FORMATS)}")
    metrics = top1_mod.METRICS if table == "top1" else top1_mod.METRICS_TOP5
    if metric not in metrics:
        raise UserError(f"--metric {metric!r}: valid for {table}: {', '.join(metrics)}")
    db = settings.open()
    df = load_jobs(db)
    long = top1_mod.top1(df, column=metrics[metric])
    title = f"{table} (%), {metric}-epoch, mean ± std (n seeds)"
    if fmt == "table":
        if long.empty:
            console.print("no finished student jobs yet")
            return
        rendered = None
        console.print(formats.rich_table(top1_mod.wide(long), title))
    elif fmt == "markdown":
        rendered = formats.markdown(top1_mod.wide(long), title)
    elif fmt == "csv":
        rendered = formats.csv(long)
    else:
        rendered = formats.to_json(long, {"table": table, "metric": metric})
    if rendered is not None:
        if out:
            out.write_text(rendered)
            console.print(f"wrote {out}")
        else:
            print(rendered, end="")
