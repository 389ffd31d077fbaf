"""The report tables by name: load what a table needs from the database, filter, build."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.report import accuracy, agreement, curves, delta, diminishing, metrics
from kdrun.report.ahead import DISPLAYED, CurvesAhead, shown_epochs
from kdrun.report.choices import TABLES, check_metric
from kdrun.report.epoch_sql import component_names
from kdrun.report.filters import Filters
from kdrun.report.load import epoch_frame, load_epochs, load_jobs
from kdrun.report.table import Report


@dataclass
class Options:
    metric: str = "best"  # best | last | last5
    show_split: bool = False
    baseline: str = "kd"  # the delta table's reference method
    paper: bool = True


def needs_epochs(name: str, metric: str) -> bool:
    return name == "curves" or (name == "top5" and metrics.needs_epochs("top5", metric))


def build_from(name: str, jobs: pd.DataFrame, epochs: pd.DataFrame | None,
               opts: Options | None = None) -> Report:
    """Build table `name` from already loaded (and filtered) jobs."""
    opts = opts or Options()
    check_metric(opts.metric)
    if name in ("top1", "top5"):
        return accuracy.build(jobs, name, opts.metric, epochs, opts.show_split, opts.paper)
    if name == "delta":
        return delta.build(jobs, opts.metric, epochs, opts.baseline)
    if name == "diminishing":
        return diminishing.build(jobs, opts.metric, epochs)
    if name == "agreement":
        return agreement.build(jobs)
    if name == "curves":
        return curves.build(jobs, epochs if epochs is not None else pd.DataFrame())
    raise UserError(f"--table {name!r}: valid tables are {', '.join(TABLES)}")


def build(name: str, db: Database, filters: Filters | None = None,
          opts: Options | None = None, long: bool = True,
          ahead: CurvesAhead | None = None) -> Report:
    """Table `name` from the database. `long=False`: only the formatted table is wanted
    (terminal, Markdown, LaTeX), so `curves` reads just the epochs it shows, not millions;
    `ahead`: those rows, if the read started early guessed them right."""
    if name not in TABLES:
        raise UserError(f"--table {name!r}: valid tables are {', '.join(TABLES)}")
    opts = opts or Options()
    jobs = (filters or Filters()).apply(load_jobs(db))
    if name == "curves" and not long:
        series = curves.series_jobs(jobs)
        shown = shown_epochs(curves.epochs_run(series))
        done = {int(j): int(e) for _, members in series
                for j, e in zip(members["job_id"], members["epochs_done"], strict=True)}
        columns = ahead.take(shown, done) if ahead is not None else None
        if columns is not None:
            epochs = epoch_frame(*columns)
        else:  # the loss components of one job per curve that has run: likely every name
            first = [int(m["job_id"][m["epochs_done"] > 0].iloc[0]) for _, m in series
                     if (m["epochs_done"] > 0).any()]
            epochs = load_epochs(db, jobs["job_id"], shown, columns=DISPLAYED,
                                 likely=component_names(db, first, shown))
        return curves.build(jobs, epochs, shown, series)
    epochs = load_epochs(db, jobs["job_id"]) if needs_epochs(name, opts.metric) else None
    return build_from(name, jobs, epochs, opts)
