"""The grid side of a researcher's daily loop (issue 14, part B): `--set` overrides and
milestone defaults, the dry run as a plan, `prune`/`delete`, and CLI conventions
(`--version`, help, `kdrun grids`/`init`, bare grid names).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select

from kdrun import grid
from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from kdrun.errors import UserError
from kdrun.recipe import default_milestones
from tests.helpers import cli, tiny_grid, write_grid


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------- overrides and milestones


def test_set_overrides_a_shipped_grid_and_milestones_follow_epochs() -> None:
    _, specs = grid.load("cifar", overrides=["recipe.epochs=1", "seeds=[0]"])
    assert {tuple(s.config["recipe"]["lr_milestones"]) for s in specs} == {(1,)}
    assert {s.config["recipe"]["epochs"] for s in specs} == {1}
    assert {s.seed for s in specs if s.kind == "student"} == {0}
    assert {s.config["recipe"]["lr"] for s in specs} == {0.05, 0.01}  # per-pair lr kept
    _, specs = grid.load("quickstart", overrides=["pairs.0.recipe.lr=0.1",
                                                  "methods=[{kd: {T: [2, 8]}}]"])
    kd = [s for s in specs if s.method == "kd"]
    assert {s.config["method"]["params"]["T"] for s in kd} == {2.0, 8.0}
    assert {s.config["recipe"]["lr"] for s in kd} == {0.1}


def test_epochs_alone_get_the_standard_fractions(tmp_path: Path) -> None:
    assert default_milestones(240) == [150, 180, 210]
    assert default_milestones(2) == [1, 2] and default_milestones(1) == [1]
    assert default_milestones(100) == [63, 75, 88]
    g = tiny_grid(recipe={"epochs": 2, "batch_size": 16})  # no lr_milestones: refused before
    _, specs = grid.expand(g)
    assert {tuple(s.config["recipe"]["lr_milestones"]) for s in specs} == {(1, 2)}
    g = tiny_grid(teachers={"resnet14": {"train": True, "recipe": {"epochs": 10}}})
    _, specs = grid.expand(g)
    teacher = next(s for s in specs if s.kind == "teacher")
    assert teacher.config["recipe"]["lr_milestones"] == [6, 8, 9]
    student = next(s for s in specs if s.kind == "student")
    assert student.config["recipe"]["lr_milestones"] == [1]  # the grid's own, unchanged


@pytest.mark.parametrize("sets, msg", [
    (["recipe.epochs"], "--set 'recipe.epochs': expected KEY=VALUE"),
    (["seeds=[0"], "--set 'seeds=[0': the value is not valid YAML"),
    (["pairs.3.recipe.lr=1"], "pairs.3: expected an index 0..0 into the list"),
    (["recipe.lr=-1"], "recipe"),
    (["methods=[{kd: {T: hot}}]"], "quickstart.yaml: methods.kd.T: expected a number"),
])
def test_bad_overrides_are_one_line(sets: list[str], msg: str) -> None:
    with pytest.raises(UserError) as e:
        grid.load("quickstart", overrides=sets)
    assert msg in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------- the dry run


def test_dry_run_is_a_plan_with_new_queued_finished(tmp_path: Path) -> None:
    g = write_grid(tmp_path / "g.yaml", tiny_grid())
    assert cli(tmp_path, "enqueue", "--grid", str(g)).exit_code == 0
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    c = queue.claim(db, "w", 60)  # the teacher finishes
    queue.succeed(db, c, {"best_top1": 1.0, "best_top5": 1.0, "best_epoch": 1,
                          "last_top1": 1.0, "last_top5": 1.0, "last5_top1": 1.0,
                          "wall_time_s": 1.0, "images_per_s": 1.0}, None)
    r = cli(tmp_path, "enqueue", "--grid", str(g), "--set", "seeds=[0, 1, 2]", "--dry-run")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "1 pair × 2 methods × 3 seeds (0, 1, 2)" in out
    assert "2 new, 4 already queued or running, 1 finished, 0 failed or cancelled" in out
    assert "no lr_milestones decays at 62.5/75/87.5% of its epochs" in out
    assert len(r.output.splitlines()) < 15
    r = cli(tmp_path, "enqueue", "--grid", str(g), "--dry-run", "--jobs")
    assert "resnet14->resnet8 kd" in r.output and "succeeded" in r.output
    r = cli(tmp_path, "enqueue", "--grid", str(g), "--dry-run", "--format", "json")
    doc = json.loads(r.output)
    assert doc["summary"]["database"] == {"new": 0, "queued": 4, "finished": 1,
                                          "failed_or_cancelled": 0}
    assert [j["db_state"] for j in doc["jobs"]].count("succeeded") == 1
    r = cli(tmp_path, "enqueue", "--grid", "quickstart", "--dry-run", "--format", "xml")
    assert r.exit_code == 2 and "valid formats are text, json" in r.output


def test_dry_run_shows_per_pair_overrides() -> None:
    from typer.testing import CliRunner

    from kdrun.cli import app

    r = CliRunner().invoke(app, ["--db", "sqlite:///nowhere/kdrun.db", "enqueue", "--grid",
                                 "cifar", "--dry-run"])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "per-pair recipe: lr=0.01 for vgg13->MobileNetV2, ResNet50->MobileNetV2" in out
    assert "per-pair default dkd beta: 6 (4 pairs), 2 (2 pairs), 8 (7 pairs)" in out
    assert "not created yet, all 384 jobs are new" in out
    assert not Path("nowhere").exists()


# ------------------------------------------------------------------------ prune, delete


def _db(tmp_path: Path) -> Database:
    g = write_grid(tmp_path / "g.yaml", tiny_grid())
    assert cli(tmp_path, "enqueue", "--grid", str(g)).exit_code == 0
    return Database(f"sqlite:///{tmp_path / 'kdrun.db'}")


def _ids(db: Database) -> list[int]:
    with db.read() as s:
        return list(s.execute(select(Job.id).order_by(Job.id)).scalars())


def test_prune_removes_cancelled_jobs_but_not_a_needed_teacher(tmp_path: Path) -> None:
    db = _db(tmp_path)  # 1 teacher, 2 vanilla, 2 kd (depending on the teacher)
    assert cli(tmp_path, "cancel", "1", "2").exit_code == 0
    r = cli(tmp_path, "prune", "--dry-run")
    assert r.exit_code == 0 and "would remove 1 job(s), keep 1" in flat(r.output)
    assert "kept 1: job 4 depends on it" in flat(r.output) and _ids(db) == [1, 2, 3, 4, 5]
    (tmp_path / "runs" / "r2").mkdir(parents=True)
    with db.write() as s:
        s.get(Job, 2).run_dir = "r2"
    r = cli(tmp_path, "prune", "--runs")
    assert r.exit_code == 0 and "removed 1 job(s), kept 1 that others need" in flat(r.output)
    assert _ids(db) == [1, 3, 4, 5] and not (tmp_path / "runs" / "r2").exists()
    assert cli(tmp_path, "cancel", "--all").exit_code == 0
    assert "removed 4 job(s)" in flat(cli(tmp_path, "prune").output)  # nothing needs it now
    assert _ids(db) == []


def test_delete_refuses_running_dependents_and_unknown_and_asks_for_results(
        tmp_path: Path) -> None:
    db = _db(tmp_path)
    c = queue.claim(db, "w", 60)  # job 1, the teacher, runs
    r = cli(tmp_path, "delete", "1", "4", "5")
    assert r.exit_code == 2 and "running" in r.output and "kdrun cancel 1" in r.output
    queue.record_epoch(db, c, {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_top1": 1.0,
                               "test_top1": 1.0, "test_top5": 1.0, "val_top1": None,
                               "epoch_time_s": 1.0, "images_per_s": 1.0,
                               "components": {"ce": 1.0}}, {})
    queue.succeed(db, c, {"best_top1": 1.0, "best_top5": 1.0, "best_epoch": 1,
                          "last_top1": 1.0, "last_top5": 1.0, "last5_top1": 1.0,
                          "wall_time_s": 1.0, "images_per_s": 1.0}, None)
    r = cli(tmp_path, "delete", "1")
    assert r.exit_code == 2 and "cannot delete job 1: job 4 depends on it" in flat(r.output)
    r = cli(tmp_path, "delete", "99")
    assert r.exit_code == 2 and "no job 99 in the database" in r.output
    r = cli(tmp_path, "delete", "1", "4", "5")
    assert r.exit_code == 2 and "1 of these 3 jobs finished with results; add --yes" \
        in flat(r.output)
    assert _ids(db) == [1, 2, 3, 4, 5]
    r = cli(tmp_path, "delete", "1", "4", "5", "--yes")
    assert r.exit_code == 0 and "deleted 3 job(s)" in r.output
    with db.read() as s:
        assert _ids(db) == [2, 3]
        assert s.execute(select(Result)).first() is None
        assert s.execute(select(EpochMetric)).first() is None
    r = cli(tmp_path, "delete", "--grid", "nope")
    assert r.exit_code == 2 and "grids in the database: tiny" in r.output
    assert cli(tmp_path, "delete", "--grid", "tiny").exit_code == 0 and _ids(db) == []


# -------------------------------------------------------------------------- conventions


def test_version_help_grids_and_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdrun import __version__

    r = cli(tmp_path, "--version")
    assert r.exit_code == 0 and r.output.strip() == f"kdrun {__version__}"
    r = cli(tmp_path, "--help")
    assert "<bool>" not in r.output and "<str>" not in r.output and "<path>" not in r.output
    for text in ("KDRUN_DB", "KDRUN_RUNS", "KDRUN_DATA", "sqlite:///kdrun.db",
                 "--install-completion", "--version"):
        assert text in r.output, text
    r = cli(tmp_path, "report", "--help")
    assert "<bool>" not in r.output and "--transpose" in r.output
    r = cli(tmp_path, "grids")
    assert r.exit_code == 0 and "quickstart" in r.output and "cifar" in r.output
    monkeypatch.chdir(tmp_path)
    r = cli(tmp_path, "init", "quickstart")
    shipped = (resources.files("kdrun") / "grids" / "quickstart.yaml").read_text()
    assert r.exit_code == 0 and (tmp_path / "quickstart.yaml").read_text() == shipped
    r = cli(tmp_path, "init", "quickstart")
    assert r.exit_code == 2 and "exists; add --force" in r.output
    r = cli(tmp_path, "init", "cifar", "mine/")
    assert r.exit_code == 0 and (tmp_path / "mine" / "cifar.yaml").is_file()
    r = cli(tmp_path, "init", "nope")
    assert r.exit_code == 2 and "shipped grids: " in r.output
    (tmp_path / "quickstart").mkdir()  # as `make quickstart` leaves: a bare name still works
    r = cli(tmp_path, "enqueue", "--grid", "quickstart", "--dry-run")
    assert r.exit_code == 0 and "shipped grid quickstart" in flat(r.output)


def test_remove_on_every_backend(db_url: str) -> None:
    """Jobs and their rows go in one transaction, dependents before their teacher."""
    from kdrun.db import hygiene, migrate

    db = Database(db_url, create=True)
    migrate.upgrade(db)
    name, specs = grid.expand(tiny_grid())
    queue.enqueue(db, name, specs)
    queue.cancel(db, Job.id.in_([2, 3, 4, 5]))
    doomed = hygiene.plan_prune(db, None, failed=False)
    assert doomed.ids == [2, 3, 4, 5] and not doomed.kept
    assert hygiene.remove(db, doomed.ids) == 4
    plan = hygiene.plan_delete(db, [1], None)
    assert hygiene.remove(db, plan.ids) == 1 and _ids(db) == []
