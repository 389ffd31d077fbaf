"""`kdrun report`: the papers' tables from the results database.

The flags are checked against kdrun.report.choices, which needs no pandas, so that the curves
table's epoch rows (kdrun.report.ahead) are already being read while pandas and the tables'
modules load: the modules that need them are imported inside the command, after that start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kdrun.cli import output
from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.report.choices import FORMATS, PLOTTABLE, SPLITS, TABLES, check_metric

if TYPE_CHECKING:
    from kdrun.db.engine import Database
    from kdrun.report.filters import Filters
    from kdrun.report.tables import Options


@app.command()
def report(
    ctx: typer.Context,
    table: str = typer.Option("top1", "--table", help=f"One of: {', '.join(TABLES)}"),
    fmt: str = typer.Option(None, "--format",
                            help=f"One of: {', '.join(FORMATS)} (default: table, or "
                                 "as --out's extension says: .tex .md .csv .json .html .txt)"),
    metric: str = typer.Option("best", "--metric",
                               help="best | last | last5: best epoch, last epoch, or mean of "
                                    "the last five epochs"),
    split: bool = typer.Option(False, "--show-split",
                               help="Show in each cell which split selected the best epoch "
                                    "(test or held-out val)"),
    split_by: str = typer.Option("auto", "--split",
                                 help="Terminal: one table per teacher or student "
                                      f"({' | '.join(SPLITS)}); auto splits the columns "
                                      "to fit the terminal's width"),
    transpose: bool = typer.Option(False, "--transpose",
                                   help="Terminal: pairs as rows, methods as columns"),
    include_cancelled: bool = typer.Option(False, "--include-cancelled",
                                           help="Also count cancelled jobs (left out by "
                                                "default, with the labels they would add)"),
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset"),
    pairs: str = typer.Option(None, "--pairs",
                              help="Only these pairs, comma-separated 'teacher->student' "
                                   "(or teacher:student)"),
    methods: str = typer.Option(None, "--methods",
                                help="Only these methods (names or sweep labels), "
                                     "comma-separated; teacher and student rows stay"),
    grid: str = typer.Option(None, "--grid", help="Only jobs of this grid (by name)"),
    baseline: str = typer.Option("kd", "--baseline",
                                 help="delta: the method gains are over, matched by values: "
                                      "kd, 'kd(T=4)'; a swept method needs its setting named"),
    paper: bool = typer.Option(True, "--paper/--no-paper",
                               help="top1: show the published numbers and the difference"),
    plot_path: Path = typer.Option(None, "--plot",
                                   help=f"Also draw the table to FILE.png, or DIR/TABLE.png "
                                        f"({', '.join(PLOTTABLE)}; needs the 'plot' extra)"),
    out: Path = typer.Option(None, "--out",
                             help="Write to this file instead of the terminal (missing "
                                  "folders are created; the extension picks the format)"),
    every: bool = typer.Option(False, "--all",
                               help="Every table in one document: html (the default with "
                                    "--all: one self-contained page) or markdown"),
) -> None:
    """Aggregate results over seeds into a paper-style table."""
    settings: Settings = ctx.obj
    if table not in TABLES:
        raise UserError(f"--table {table!r}: valid tables are {', '.join(TABLES)}")
    fmt = output.choose_format(fmt, out, (*FORMATS, "html"),
                               default="html" if every else "table")
    if every and fmt not in ("html", "markdown"):
        raise UserError(f"--all --format {fmt}: --all writes html or markdown; for {fmt}, "
                        "ask for one --table at a time")
    if every and plot_path is not None:
        raise UserError("--all: the HTML report embeds every plot; --plot draws one --table")
    if split_by not in SPLITS:
        raise UserError(f"--split {split_by!r}: valid choices are {', '.join(SPLITS)}")
    check_metric(metric)
    if plot_path is not None and table not in PLOTTABLE:
        raise UserError(f"--plot: available for {', '.join(PLOTTABLE)}, not {table}")
    # the terminal, Markdown and LaTeX show the formatted table only: curves then reads the
    # epochs it shows, not every epoch of every job, and starts before pandas loads
    long = fmt in ("csv", "json") or plot_path is not None
    ahead = None
    if table == "curves" and not long and fmt != "html" and not every:
        from kdrun.report.ahead import CurvesAhead

        ahead = CurvesAhead(settings.open, include_cancelled)
    db = settings.open()
    from kdrun.report import fit, formats
    from kdrun.report.filters import Filters, split_list
    from kdrun.report.plot import plot
    from kdrun.report.tables import Options, build

    filters = Filters(dataset=dataset, grid=grid, pairs=tuple(split_list(pairs)),
                      methods=tuple(split_list(methods)), include_cancelled=include_cancelled)
    opts = Options(metric=metric, show_split=split, baseline=baseline, paper=paper)
    if fmt == "html" or every:
        _document(db, TABLES if every else (table,), fmt, filters, opts, out)
        return
    rep = build(table, db, filters, opts, long=long, ahead=ahead)
    if plot_path is not None:
        console.print(f"wrote {plot(rep, output.plot_path(plot_path, table))}", soft_wrap=True)
    if fmt == "table" and out is None:
        if rep.empty:
            console.print(f"{table}: nothing to show yet")
            for note in rep.notes:
                console.print(f"  {note}", style="dim")
            return
        console.print(fit.tables(rep, console.width, transpose, split_by))
        return
    if fmt == "table":
        rendered = formats.text(rep, transpose=transpose, split=split_by)
    else:
        rendered = formats.render(rep, fmt)
    if out:
        output.write_text(out, rendered)
        console.print(f"wrote {out} ({fmt})", soft_wrap=True)
    else:
        print(rendered, end="")


def _document(db: Database, names: tuple[str, ...], fmt: str, filters: Filters,
              opts: Options, out: Path | None) -> None:
    """Several tables in one file: the HTML page (kdrun.report.html) or Markdown sections."""
    from kdrun.report import formats
    from kdrun.report.tables import build

    if fmt == "html":
        from kdrun.report import html

        text = html.render(db, names, filters, opts)
    else:
        parts = []
        for name in names:
            try:
                parts.append(f"## {name}\n\n"
                             + formats.markdown(build(name, db, filters, opts, long=False)))
            except UserError as e:  # e.g. delta without its baseline; the others still print
                parts.append(f"## {name}\n\n{e}\n")
        text = "\n".join(parts)
    if out:
        output.write_text(out, text)
        console.print(f"wrote {out} ({fmt})")
    else:
        print(text, end="")
