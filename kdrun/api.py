"""kdrun's results as pandas DataFrames, for notebooks and your own figures.

    import kdrun.api
    runs = kdrun.api.open("sqlite:///kdrun.db")      # or postgresql+psycopg://...
    jobs = runs.jobs()                                # one row per job
    res = runs.results()                              # one row per finished job
    ep = runs.epochs()                                # one row per job and epoch
    top1 = runs.table("top1")                         # what `kdrun report --format csv` writes
    runs.table("top1", wide=True)                     # the table as the report prints it

The three tables are the ones `kdrun export` writes (the same functions), joined by
`job_id`. Their columns:

- `jobs()`: `job_id`, `hash` (the job's identity: sha256 of its resolved config), `grid`,
  `kind` (teacher: a teacher's own training; student), `dataset`, `teacher` (name, None for a
  student trained alone), `student` (the architecture trained), `method`, `seed`, `state`
  (queued, running, succeeded, failed, cancelled), `attempts`, `max_attempts`,
  `depends_on_id` (the teacher's job), `priority`, `epoch` (epochs done), `error`, `worker`,
  `run_dir` (under the runs directory), `created_at`/`started_at`/`finished_at` (Unix
  seconds, database clock), `kdrun_version`, `torch_version`, `device_name`, `label` (the
  method label the tables use, e.g. `kd(T=2)` for a sweep point), `teacher_arch`,
  `teacher_checkpoint`, and the resolved config flattened: `dataset.*`, `recipe.*`
  (`recipe.lr`, `recipe.epochs`, ...), `params.*` (method hyperparameters, `params.T`).
- `results()`: `job_id`, `best_top1`/`best_top5` (test accuracy at the best epoch, %),
  `best_epoch`, `selection_split` (test or val: the split that picked the best epoch),
  `last_top1`/`last_top5` (last epoch), `last5_top1` (mean of the last five epochs),
  `wall_time_s`, `images_per_s`, `teacher_top1` (the teacher as the student's final
  evaluation measured it), `agree_top1`, `spearman`, `kendall`, `kl` (student-teacher
  agreement on the test set), `checkpoint`, `sha256` (final weights), `switches.*` (how it
  ran: `switches.device`, `switches.amp`, `switches.compile`, `switches.teacher`, ...).
- `epochs()`: `job_id`, `epoch` (1-based), `lr`, `train_loss`, `train_top1`, `test_top1`,
  `test_top5`, `val_top1` (NaN without a held-out split), `epoch_time_s`, `images_per_s`,
  and one `loss.<component>` column per loss term, sorted by name (`loss.ce`, `loss.kd`).
- `tracker_runs()`: `job_id`, `tracker`, `run_id`, `name`, `project`, `url`, `path`,
  `created_at`, `updated_at` (kdrun.trackers).
- `table(name)`: the report table's long form, one row per cell with full-precision numbers;
  its columns are each table's (`kdrun.report.accuracy.LONG_COLS`, `delta.LONG_COLS`, ...),
  e.g. for top1: `dataset`, `pair`, `teacher`, `student`, `row` (method label), `mean`,
  `std`, `n`, `total`, queued/running/failed/cancelled counts, `selection_split`, `paper`,
  `paper_std`, `paper_source`, `paper_diff`.

Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kdrun.db.engine import Database, default_url
from kdrun.db.migrate import require_current
from kdrun.report import export, tables
from kdrun.report.filters import Filters
from kdrun.report.load import load_epochs
from kdrun.report.table import Report
from kdrun.trackers import store as tracker_store

__all__ = ["Results", "open"]


class Results:
    """A kdrun database, read only. Every call reads the database afresh (live runs too)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"kdrun.api.Results({self.db.display_url})"

    def jobs(self, grid: str | None = None) -> pd.DataFrame:
        """One row per job (all states), config flattened to columns (see module doc)."""
        return export.jobs_and_results(self.db, grid)[0]

    def results(self, grid: str | None = None) -> pd.DataFrame:
        """One row per finished job: best/last accuracy, agreement, switches."""
        return export.jobs_and_results(self.db, grid)[1]

    def epochs(self, grid: str | None = None) -> pd.DataFrame:
        """One row per job and epoch, loss components as `loss.<name>` columns."""
        ids = None if grid is None else list(self.jobs(grid)["job_id"])
        return load_epochs(self.db, ids)

    def tracker_runs(self) -> pd.DataFrame:
        """Each job's TensorBoard / W&B run."""
        return tracker_store.frame(self.db)

    def report(self, name: str = "top1", **options: Any) -> Report:
        """The report table `name` (top1, top5, delta, diminishing, agreement, curves) with
        `kdrun report`'s options -- metric, dataset, grid, pairs, methods, baseline, paper,
        split -- as keywords; `.long`, `.wide`, `.title`, `.notes`."""
        return tables.build(name, self.db, *_options(**options))

    def table(self, name: str = "top1", *, wide: bool = False, **options: Any) -> pd.DataFrame:
        """The report table's numbers, as `kdrun report --format csv` writes them (one row
        per cell, full precision), or with `wide=True` the formatted table as the report
        prints it. Options as `report`."""
        rep = self.report(name, **options)
        return rep.wide.copy() if wide else rep.long.copy()

    def html(self, path: str | Path, **options: Any) -> Path:
        """Write the HTML report of every table (`kdrun report --all --out PATH`)."""
        from kdrun.report import html

        out = Path(path)
        out.write_text(html.render(self.db, tables.TABLES, *_options(**options)))
        return out


def _options(metric: str = "best", dataset: str | None = None, grid: str | None = None,
             pairs: Sequence[str] = (), methods: Sequence[str] = (), baseline: str = "kd",
             paper: bool = True, split: bool = False) -> tuple[Filters, tables.Options]:
    filters = Filters(dataset=dataset, grid=grid, pairs=tuple(pairs), methods=tuple(methods))
    return filters, tables.Options(metric=metric, show_split=split, baseline=baseline,
                                   paper=paper)


def open(db_url: str | None = None) -> Results:  # noqa: A001 (kdrun.api.open, like io.open)
    """The results in the database at `db_url` (default: $KDRUN_DB, else ./kdrun.db)."""
    db = Database(db_url or default_url())
    require_current(db)
    return Results(db)
