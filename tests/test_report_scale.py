"""The scale paths of reports, export and status agree with a straightforward computation.

Curves are one vectorised group-by (and, for the terminal, a read of only the shown epochs);
epochs.csv is streamed in chunks of jobs and of rows with `%.9g` numbers; `status --json`
splices the stored config text into its output. Each is checked here against the plain
computation on a small database with more epochs than the terminal shows, seeds that ran
different numbers of epochs, a job still running, loss components that differ by method,
and missing values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kdrun import grid
from kdrun.cli import jobs as jobs_cli
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.report import curves, epoch_sql, export, load
from kdrun.report.ahead import SHOWN_EPOCHS, CurvesAhead, shown_epochs
from kdrun.report.filters import Filters
from kdrun.report.stats import mean_std
from kdrun.report.tables import build
from tests.test_report_db import SYNTH, build_db, grid_dict, run_cli

EPOCHS = 14  # more than SHOWN_EPOCHS


def _row(job: int, e: int, comps: tuple[str, ...]) -> dict[str, Any]:
    loss = 3.0 / e + 0.01 * job
    return {"epoch": e, "lr": 0.05 if e < 8 else 0.005, "train_loss": loss,
            "components": {c: loss / (i + 2) for i, c in enumerate(comps)},
            "train_top1": 40.0 + e + job / 7, "test_top1": 30.0 + e + job / 3,
            "test_top5": 60.0 + e, "val_top1": None if job % 2 else 20.0 + e / 3,
            "epoch_time_s": 1.5, "images_per_s": 48.0 + job}


def _build(path: Path) -> Database:
    """Teachers and students over 3 seeds; job 7 stops at epoch 9 and one dist job stays
    running at epoch 4; val_top1 is missing for odd job ids."""
    db = Database(f"sqlite:///{path}", create=True)
    migrate.upgrade(db)
    raw = grid_dict(dataset=dict(SYNTH), recipe={"epochs": EPOCHS, "batch_size": 16,
                                                  "lr": 0.05, "lr_milestones": [8]})
    name, specs = grid.expand(raw)
    queue.enqueue(db, name, specs)
    while (c := queue.claim(db, "test-worker", 600)) is not None:
        cfg = c.config
        comps = ("ce",) if cfg["method"]["name"] == "vanilla" else ("ce", "kd")
        running = (cfg["method"]["name"], (cfg.get("teacher") or {}).get("name"),
                   cfg["seed"]) == ("dist", "resnet20", 2)
        last = 9 if c.job_id == 7 else (4 if running else EPOCHS)
        for e in range(1, last + 1):
            queue.record_epoch(db, c, _row(c.job_id, e, comps), {"epoch": e})
        if not running:
            top1 = 50.0 + c.job_id
            queue.succeed(db, c, {"best_top1": top1, "best_top5": 90.0, "best_epoch": 3,
                                  "last_top1": top1, "last_top5": 90.0, "last5_top1": top1,
                                  "selection_split": "test", "wall_time_s": 1.0,
                                  "images_per_s": 1.0}, None)
    return db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    return _build(tmp_path_factory.mktemp("scale") / "kdrun.db")


def _plain_curves(db: Database) -> pd.DataFrame:
    """Per series, epoch and quantity: mean_std over the jobs' values, one cell at a time."""
    jobs = load.load_jobs(db)
    ep = load.load_epochs(db)
    out = []
    for key, members in curves.series_jobs(jobs):
        mine = ep[ep["job_id"].isin(set(members["job_id"]))]
        for e in sorted(set(mine["epoch"])):
            at = mine[mine["epoch"] == e]
            for q in curves.quantities(ep):
                mean, std, n = mean_std(at[q].dropna())
                if n:
                    out.append({**key, "quantity": q, "epoch": e, "mean": mean, "std": std,
                                "n": n})
    return pd.DataFrame(out)


def test_curves_equal_the_cell_by_cell_computation(db: Database) -> None:
    long = build("curves", db).long
    plain = _plain_curves(db)
    keys = ["series", "row", "quantity", "epoch"]
    assert len(long) == len(plain)
    merged = long.merge(plain, on=keys, suffixes=("", "_plain"))
    assert len(merged) == len(plain)
    assert (merged["n"] == merged["n_plain"]).all()
    assert merged["mean"].to_numpy() == pytest.approx(merged["mean_plain"].to_numpy())
    assert merged["std"].to_numpy() == pytest.approx(merged["std_plain"].to_numpy(),
                                                     nan_ok=True)
    assert {"loss.ce", "loss.kd", "val_top1"} <= set(long["quantity"])
    # ordered by series, then epoch, then quantity
    first = long[(long["series"] == long["series"].iloc[0]) & (long["row"] == long["row"].iloc[0])]
    assert list(first["epoch"]) == sorted(first["epoch"])


def test_curves_terminal_reads_only_the_shown_epochs_and_matches(db: Database,
                                                                 monkeypatch) -> None:
    full = build("curves", db)
    read: list[Any] = []
    real = load.load_epochs

    def spy(db_: Database, ids: Any = None, epochs: Any = None, **kw: Any) -> pd.DataFrame:
        read.append(epochs)
        return real(db_, ids, epochs, **kw)

    monkeypatch.setattr("kdrun.report.tables.load_epochs", spy)
    shown = build("curves", db, long=False)
    assert read == [shown_epochs(list(range(1, EPOCHS + 1)))]
    assert len(read[0]) == SHOWN_EPOCHS < EPOCHS
    pd.testing.assert_frame_equal(shown.wide, full.wide)
    assert shown.notes == full.notes
    assert any("n varies" in n for n in shown.notes)
    assert set(shown.long["epoch"]) == set(read[0])


def test_load_epochs_across_id_chunks_and_epoch_subsets(db: Database, monkeypatch) -> None:
    whole = load.load_epochs(db)
    monkeypatch.setattr(epoch_sql, "IDS_PER_QUERY", 2)
    ids = sorted(set(whole["job_id"]))[1:]
    part = load.load_epochs(db, ids, [2, 9, 13])
    expect = whole[whole["job_id"].isin(ids) & whole["epoch"].isin([2, 9, 13])]
    pd.testing.assert_frame_equal(part, expect.reset_index(drop=True), check_dtype=False)
    assert list(whole.columns[-2:]) == ["loss.ce", "loss.kd"]
    assert whole["loss.kd"].isna().sum() > 0 and whole["val_top1"].isna().sum() > 0


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).astype(float)


@pytest.mark.parametrize("rows", [5, 100_000])
def test_epochs_csv_streamed_in_chunks_equals_the_table(db: Database, tmp_path: Path,
                                                        monkeypatch, rows: int) -> None:
    whole = load.load_epochs(db).astype(float)
    n = export.write_epochs_csv(db, None, tmp_path / "all.csv", chunk=rows)
    assert n == len(whole)
    got = _read(tmp_path / "all.csv")
    assert list(got.columns) == list(whole.columns)
    pd.testing.assert_frame_equal(got, whole, rtol=1e-8)  # %.9g: 9 significant digits
    monkeypatch.setattr(epoch_sql, "IDS_PER_QUERY", 3)  # several id chunks, and a row chunk of 5
    ids = [3, 4, 7, 8, 11, 12, 17]
    export.write_epochs_csv(db, ids, tmp_path / "some.csv", chunk=rows)
    some = _read(tmp_path / "some.csv")
    expect = whole[whole["job_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, expect, rtol=1e-8)


def test_epochs_read_in_one_pass_with_likely_names_equal_the_exact_read(db: Database) -> None:
    exact = load.load_epochs(db, epochs=[1, 5, 9])
    assert {"loss.ce", "loss.kd"} <= set(exact.columns)
    # every name: one pass; only "ce" (vanilla's): a kd row says it has another, read again
    for likely in (["ce", "kd"], ["ce"]):
        got = load.load_epochs(db, epochs=[1, 5, 9], likely=likely)
        pd.testing.assert_frame_equal(got, exact)


def _taking(ahead: CurvesAhead, monkeypatch) -> list[bool]:
    """Records whether the table took the read-ahead's copy."""
    taken: list[bool] = []
    real = ahead.take
    monkeypatch.setattr(ahead, "take", lambda shown, done: taken.append(
        (got := real(shown, done)) is not None) or got)
    return taken


@pytest.mark.parametrize("filters", [Filters(), Filters(methods=("kd",)),
                                     Filters(pairs=("resnet14->resnet8",))])
def test_curves_read_ahead_equals_the_tables_own_read(db: Database, monkeypatch,
                                                      filters: Filters) -> None:
    """Read in a forked process before the jobs are loaded and filtered: the same table, with
    the rows of jobs a filter leaves out ignored."""
    own = build("curves", db, filters, long=False)
    ahead = CurvesAhead(lambda: db)
    taken = _taking(ahead, monkeypatch)
    got = build("curves", db, filters, long=False, ahead=ahead)
    assert taken == [True] and ahead.shown == shown_epochs(list(range(1, EPOCHS + 1)))
    pd.testing.assert_frame_equal(got.wide, own.wide)
    assert got.notes == own.notes


def test_curves_read_ahead_wrong_guesses(db: Database, monkeypatch) -> None:
    ahead = CurvesAhead(lambda: db)
    assert ahead.take([1, 2, 3], {}) is None  # the table shows other epochs (a filter)
    assert ahead.shown == shown_epochs(list(range(1, EPOCHS + 1)))
    # a job recorded an epoch between the child's read and the table's: not taken
    student = int(load.load_jobs(db).query("kind == 'student'")["job_id"].iloc[0])
    shown = shown_epochs(list(range(1, EPOCHS + 1)))
    assert CurvesAhead(lambda: db).take(shown, {}) is not None
    assert CurvesAhead(lambda: db).take(shown, {student: EPOCHS + 1}) is None
    own = build("curves", db, long=False)
    # the read fails (here: the database does not open): the table reads its own
    ahead = CurvesAhead(lambda: 1 / 0)
    taken = _taking(ahead, monkeypatch)
    pd.testing.assert_frame_equal(build("curves", db, long=False, ahead=ahead).wide, own.wide)
    assert taken == [False]
    # guessed components that miss one (vanilla's only): kd is found on the rows, read too
    calls: list[int] = []
    real = epoch_sql.component_names

    def guess_ce(*a: Any, **kw: Any) -> list[str]:  # the guess (the first call) only
        calls.append(1)
        return ["ce"] if len(calls) == 1 else real(*a, **kw)

    monkeypatch.setattr("kdrun.report.epoch_sql.component_names", guess_ce)
    ahead = CurvesAhead(lambda: db)
    taken = _taking(ahead, monkeypatch)
    got = build("curves", db, long=False, ahead=ahead)
    assert taken == [True]
    pd.testing.assert_frame_equal(got.wide, own.wide)
    assert any("loss.kd" in row for row in got.wide.index)


def test_csv_lines_empty_for_missing_and_plain_numbers() -> None:
    rows = [(1, 1, 0.05, None, math.nan, None, 1e-5),
            (1, 2, 2.0 / 3, None, 61.878151192235326, 3.0, math.inf)]
    assert export.csv_lines(rows) == ("1,1,0.05,,,,1e-05\n"
                                      "1,2,0.666666667,,61.8781512,3,inf\n")


def test_export_cli_counts_and_grid(db: Database, tmp_path: Path) -> None:
    r = run_cli(db, "export", "--out", str(tmp_path / "x"))
    assert r.exit_code == 0, r.output
    n = len(load.load_epochs(db))
    assert f"{n} epochs" in r.output
    assert len(pd.read_csv(tmp_path / "x" / "epochs.csv")) == n
    # the CLI finds the component names in a thread while it builds jobs.csv: same file
    export.write_epochs_csv(db, None, tmp_path / "direct.csv")
    assert (tmp_path / "x" / "epochs.csv").read_text() == (tmp_path / "direct.csv").read_text()
    r = run_cli(db, "export", "--out", str(tmp_path / "y"), "--grid", "rep")
    assert r.exit_code == 0 and f"{n} epochs" in r.output


def test_status_json_splices_the_stored_config(db: Database, capsys) -> None:
    jobs_cli.print_status_json(db, None)
    printed = json.loads(capsys.readouterr().out)
    assert printed == jobs_cli.status_json(db, None)
    running = [j for j in printed["jobs"] if j["state"] == "running"]
    assert len(running) == 1 and running[0]["progress"] == {"epoch": 4}
    kd = next(j for j in printed["jobs"] if j["method"] == "kd")
    assert kd["config"]["method"]["params"]["T"] == kd["hyperparameters"]["T"] == 4.0
    assert kd["epochs"] == EPOCHS


def test_streamed_export_and_status_json_on_every_backend(db_url: str, tmp_path: Path,
                                                          capsys, monkeypatch) -> None:
    """The driver-level paths (literal SQL, JSON keys and text) on SQLite and PostgreSQL."""
    db = build_db(db_url)
    try:
        whole = load.load_epochs(db).astype(float)
        assert export.write_epochs_csv(db, None, tmp_path / "all.csv", chunk=7) == len(whole)
        pd.testing.assert_frame_equal(_read(tmp_path / "all.csv"), whole, rtol=1e-8)
        export.write_epochs_csv(db, [6, 7], tmp_path / "two.csv")
        assert set(_read(tmp_path / "two.csv")["job_id"]) == {6.0, 7.0}
        assert epoch_sql.component_names(db) == ["ce", "kd"]
        # the curves read-ahead's forked child opens its own connection on either backend
        ahead = CurvesAhead(lambda: db)
        taken = _taking(ahead, monkeypatch)
        shown = build("curves", db, long=False, ahead=ahead)
        assert taken == [True]
        pd.testing.assert_frame_equal(shown.wide, build("curves", db, long=False).wide)
        jobs_cli.print_status_json(db, None)
        assert json.loads(capsys.readouterr().out) == jobs_cli.status_json(db, None)
    finally:
        db.dispose()
