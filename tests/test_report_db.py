"""A results database with known values, built through the real queue (claim, record_epoch,
succeed, fail), shared by the report tests; plus the tests of loading and `kdrun export`.

The values are literal tables below so every expected number in the report tests can be
computed by hand from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from kdrun import grid
from kdrun.cli import app
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.report import export
from kdrun.report.load import load_epochs, load_jobs
from kdrun.report.tables import build

SYNTH = {"name": "synthetic", "num_classes": 4, "train_size": 48, "test_size": 16}
RECIPE = {"epochs": 3, "batch_size": 16, "lr": 0.05, "lr_milestones": [2]}


def grid_dict(**overrides: Any) -> dict[str, Any]:
    g = {"name": "rep", "dataset": dict(SYNTH), "recipe": dict(RECIPE),
         "teachers": {"resnet14": {"train": True}, "resnet20": {"train": True}},
         "pairs": [{"teacher": "resnet14", "student": "resnet8"},
                   {"teacher": "resnet20", "student": "resnet8"}],
         "methods": ["vanilla", "kd", "dist"], "seeds": [0, 1, 2]}
    g.update(overrides)
    return g


# best-epoch top-1 per (teacher or None, method, seed); teachers under (arch, "teacher", 0)
BEST = {
    ("resnet14", "teacher", 0): 60.0, ("resnet20", "teacher", 0): 66.0,
    (None, "vanilla", 0): 50.0, (None, "vanilla", 1): 52.0, (None, "vanilla", 2): 51.0,
    ("resnet14", "kd", 0): 53.0, ("resnet14", "kd", 1): 54.0, ("resnet14", "kd", 2): 56.0,
    ("resnet14", "dist", 0): 54.0, ("resnet14", "dist", 1): 56.0, ("resnet14", "dist", 2): 57.5,
    ("resnet20", "kd", 0): 54.0, ("resnet20", "kd", 1): 55.0, ("resnet20", "kd", 2): 55.0,
    ("resnet20", "dist", 0): 57.0, ("resnet20", "dist", 1): 56.0, ("resnet20", "dist", 2): 58.5,
}
# the teachers' accuracy as their students' final evaluation measures it (last-epoch weights)
TEACHER_TOP1 = {"resnet14": 59.0, "resnet20": 65.5}
# agreement of (teacher, method) per seed: (agree_top1, spearman, kendall, kl)
AGREE = {
    ("resnet14", "kd"): [(80.0, 0.9, 0.7, 0.3), (82.0, 0.8, 0.6, 0.2), (84.0, 0.7, 0.5, 0.1)],
    ("resnet14", "dist"): [(85.0, 0.95, 0.8, 0.2), (85.0, 0.85, 0.7, 0.2),
                           (88.0, 0.9, 0.75, 0.15)],
    ("resnet20", "kd"): [(70.0, 0.6, 0.4, 0.5), (72.0, 0.7, 0.5, 0.4), (71.0, 0.65, 0.45, 0.45)],
    ("resnet20", "dist"): [(75.0, 0.8, 0.6, 0.3), (76.0, 0.7, 0.5, 0.35),
                           (77.0, 0.75, 0.55, 0.25)],
}


def last_of(best: float, seed: int) -> float:
    """Last-epoch top-1: 1 point below best, another 0.5 per seed."""
    return best - 1.0 - 0.5 * seed


def epoch_rows(best: float, seed: int, comps: tuple[str, ...]) -> list[dict[str, Any]]:
    """Three epochs: test top-1 = 10*epoch + seed, train loss = 3 - 0.5*epoch + 0.1*seed;
    top-5 = top-1 + 20 (so last5 top-5 = mean over the 3 epochs = 40 + seed)."""
    rows = []
    for e in (1, 2, 3):
        loss = 3.0 - 0.5 * e + 0.1 * seed
        rows.append({"epoch": e, "lr": 0.05 if e < 2 else 0.005, "train_loss": loss,
                     "components": {c: loss / len(comps) for c in comps},
                     "train_top1": 40.0 + e, "test_top1": 10.0 * e + seed,
                     "test_top5": 10.0 * e + seed + 20.0, "val_top1": None,
                     "epoch_time_s": 1.0, "images_per_s": 48.0})
    return rows


def result_for(config: dict[str, Any]) -> dict[str, Any]:
    seed, method = config["seed"], config["method"]["name"]
    t = config.get("teacher")
    if config["kind"] == "teacher":
        best, tname = BEST[(config["student"], "teacher", 0)], None
        last = TEACHER_TOP1[config["student"]]
    else:
        tname = t["name"] if t else None
        best = BEST[(tname, method, seed)]
        last = last_of(best, seed)
    res = {"best_top1": best, "best_top5": best + 30.0, "best_epoch": 2, "last_top1": last,
           "last_top5": last + 30.0, "last5_top1": best - 0.25, "selection_split": "test",
           "wall_time_s": 3.0, "images_per_s": 48.0, "teacher_top1": None, "agree_top1": None,
           "spearman": None, "kendall": None, "kl": None, "checkpoint": None, "sha256": None}
    if tname:
        a, rho, tau, kl = AGREE[(tname, method)][seed]
        res.update(teacher_top1=TEACHER_TOP1[tname], agree_top1=a, spearman=rho, kendall=tau,
                   kl=kl)
    return res


Plan = Callable[[dict[str, Any]], str]  # config -> "succeeded" | "running" | "failed" | "queued"


def build_db(where: Path | str, raw: dict[str, Any] | None = None, plan: Plan | None = None,
             results: Callable[[dict[str, Any]], dict[str, Any]] = result_for) -> Database:
    """Enqueue the grid, then claim every runnable job and give it the planned outcome.
    `where`: a SQLite file, or any database URL (an empty database)."""
    db = Database(f"sqlite:///{where}" if isinstance(where, Path) else where, create=True)
    migrate.upgrade(db)
    name, specs = grid.expand(raw or grid_dict())
    queue.enqueue(db, name, specs)
    to_requeue = []
    while (c := queue.claim(db, "test-worker", 600)) is not None:
        outcome = plan(c.config) if plan else "succeeded"
        if outcome == "running":
            continue
        if outcome == "queued":
            to_requeue.append(c)
            continue
        if outcome == "failed":
            queue.fail(db, c, "RuntimeError: planned failure", retry=False)
            continue
        res = results(c.config)
        comps = ("ce",) if c.config["method"]["name"] == "vanilla" else ("ce", "kd")
        for row in epoch_rows(res["best_top1"], c.config["seed"], comps):
            queue.record_epoch(db, c, row, {"epoch": row["epoch"]})
        queue.succeed(db, c, res, None)
    for c in to_requeue:
        queue.requeue(db, c, "planned: still queued")
    return db


@pytest.fixture(scope="session")
def full_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    return build_db(tmp_path_factory.mktemp("report") / "kdrun.db")


def run_cli(db: Database, *args: str):
    url = db.url.render_as_string(hide_password=False)
    return CliRunner().invoke(app, ["--db", url, *args])


# ---------------------------------------------------------------------------------- tests


def test_load_jobs_has_every_job_and_its_result(full_db: Database) -> None:
    df = load_jobs(full_db)
    assert len(df) == 2 + 3 + 12
    assert set(df["state"]) == {"succeeded"}
    kd = df[(df["method"] == "kd") & (df["teacher"] == "resnet14")].sort_values("seed")
    assert kd["best_top1"].tolist() == [53.0, 54.0, 56.0]
    assert kd["last_top1"].tolist() == [52.0, 52.5, 54.0]
    teacher = df[(df["kind"] == "teacher") & (df["student"] == "resnet14")]
    assert set(kd["teacher_job"]) == set(teacher["hash"])  # found by identity, not name
    assert set(df["label"]) == {"vanilla", "kd", "dist"}


def test_load_epochs_expands_loss_components(full_db: Database) -> None:
    ep = load_epochs(full_db)
    assert len(ep) == 17 * 3
    assert {"loss.ce", "loss.kd"} <= set(ep.columns)
    assert ep["loss.kd"].isna().sum() == 5 * 3  # teachers and vanilla students have only CE


def test_export_csv_round_trip(full_db: Database, tmp_path: Path) -> None:
    r = run_cli(full_db, "export", "--format", "csv", "--out", str(tmp_path / "x"))
    assert r.exit_code == 0, r.output
    jobs = pd.read_csv(tmp_path / "x" / "jobs.csv")
    results = pd.read_csv(tmp_path / "x" / "results.csv")
    epochs = pd.read_csv(tmp_path / "x" / "epochs.csv")
    assert (len(jobs), len(results), len(epochs)) == (17, 17, 51)
    merged = jobs.merge(results, on="job_id")
    dist = merged[(merged["method"] == "dist") & (merged["teacher"] == "resnet20")]
    assert sorted(dist["best_top1"]) == [56.0, 57.0, 58.5]
    assert set(dist["params.T"]) == {4.0}  # hyperparameters flattened to columns
    assert epochs.groupby("job_id").size().eq(3).all()


def test_every_backend_gives_the_same_tables(db_url: str) -> None:
    """SQLite and PostgreSQL (when a server answers) store and report the same numbers."""
    db = build_db(db_url)
    try:
        top1 = build("top1", db).long.set_index(["row", "pair"])
        assert top1.loc[("kd", "resnet14->resnet8"), "mean"] == pytest.approx(163 / 3)
        delta = build("delta", db).long.set_index(["row", "pair"])
        assert delta.loc[("dist", "resnet14->resnet8"), "mean"] == pytest.approx(1.5)
        assert len(export.tables(db)["epochs"]) == 51
    finally:
        db.dispose()


def test_export_json_and_grid_filter(full_db: Database, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    r = run_cli(full_db, "export", "--format", "json", "--out", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert {k: len(v) for k, v in doc.items()} == {"jobs": 17, "results": 17, "epochs": 51}
    r = run_cli(full_db, "export", "--format", "json", "--grid", "nope")
    assert r.exit_code == 2 and "no jobs of that grid" in r.output
    frames = export.tables(full_db, grid="rep")
    assert len(frames["jobs"]) == 17
