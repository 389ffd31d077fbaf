"""`kdrun report`: the papers' tables from the results database."""

from __future__ import annotations

from pathlib import Path

import typer

from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.report import formats, metrics
from kdrun.report.filters import Filters, split_list
from kdrun.report.plot import PLOTTABLE, plot
from kdrun.report.tables import TABLES, Options, build


@app.command()
def report(
    ctx: typer.Context,
    table: str = typer.Option("top1", "--table", help=f"One of: {', '.join(TABLES)}"),
    fmt: str = typer.Option("table", "--format", help=f"One of: {', '.join(formats.FORMATS)}"),
    metric: str = typer.Option("best", "--metric",
                               help="best | last | last5: best epoch, last epoch, or mean of "
                                    "the last five epochs"),
    split: bool = typer.Option(False, "--split",
                               help="Show in each cell which split selected the best epoch "
                                    "(test or held-out val)"),
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset"),
    pairs: str = typer.Option(None, "--pairs",
                              help="Only these pairs, comma-separated 'teacher->student' "
                                   "(or teacher:student)"),
    methods: str = typer.Option(None, "--methods",
                                help="Only these methods (names or sweep labels), "
                                     "comma-separated; teacher and student rows stay"),
    grid: str = typer.Option(None, "--grid", help="Only jobs of this grid (by name)"),
    baseline: str = typer.Option("kd", "--baseline", help="delta: the method gains are over"),
    paper: bool = typer.Option(True, "--paper/--no-paper",
                               help="top1: show the published numbers and the difference"),
    plot_path: Path = typer.Option(None, "--plot",
                                   help=f"Also draw the table to a PNG ({', '.join(PLOTTABLE)}; "
                                        "needs the 'plot' extra)"),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of the terminal"),
) -> None:
    """Aggregate results over seeds into a paper-style table."""
    settings: Settings = ctx.obj
    if table not in TABLES:
        raise UserError(f"--table {table!r}: valid tables are {', '.join(TABLES)}")
    if fmt not in formats.FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(formats.FORMATS)}")
    metrics.check(metric)
    if plot_path is not None and table not in PLOTTABLE:
        raise UserError(f"--plot: available for {', '.join(PLOTTABLE)}, not {table}")
    filters = Filters(dataset=dataset, grid=grid, pairs=tuple(split_list(pairs)),
                      methods=tuple(split_list(methods)))
    opts = Options(metric=metric, show_split=split, baseline=baseline, paper=paper)
    rep = build(table, settings.open(), filters, opts)
    if plot_path is not None:
        console.print(f"wrote {plot(rep, plot_path)}")
    if fmt == "table" and out is None:
        if rep.empty:
            console.print(f"{table}: nothing to show yet")
            for note in rep.notes:
                console.print(f"  {note}", style="dim")
            return
        console.print(formats.rich_table(rep))
        return
    rendered = formats.render(rep, fmt)
    if out:
        out.write_text(rendered)
        console.print(f"wrote {out}")
    else:
        print(rendered, end="")
