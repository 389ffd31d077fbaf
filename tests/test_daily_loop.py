"""A researcher's daily loop (issue 14, jobs side): a failed teacher blocks its students
(status, JSON, worker, reports) until `retry`; every job has a label and run folder of its
own; `kdrun show` / `kdrun logs`; the failure breaker on repeated deterministic errors; a
missing dataset refused at enqueue; former tracebacks and silent no-ops are one line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from rich.console import Console
from sqlalchemy import update
from typer.testing import CliRunner

from kdrun import labels
from kdrun.cli import app, jobs
from kdrun.cli.app import console
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.grid import expand
from kdrun.worker import FailureBreaker, Outcome, WorkerOptions, work
from tests.helpers import cli, tiny_grid, write_grid

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch) -> None:
    monkeypatch.setattr(console, "width", 200)


def flat(text: str) -> str:
    return " ".join(text.split())


def sweep_grid(**teacher) -> dict:
    return tiny_grid(teachers={"resnet14": {"train": True, **teacher}},
                     methods=[{"kd": {"T": [2, 8]}}], seeds=[0])


def new_db(tmp_path: Path, grid: dict) -> Database:
    assert cli(tmp_path, "enqueue", "--grid", str(write_grid(tmp_path / "g.yaml", grid))
               ).exit_code == 0
    return Database(f"sqlite:///{tmp_path / 'kdrun.db'}")


def test_failed_teacher_blocks_its_students_until_retried(tmp_path):
    # the teacher's loss diverges at once (a deterministic failure); its two students wait
    new_db(tmp_path, sweep_grid(recipe={"lr": 1e12, "lr_milestones": []}))
    r = cli(tmp_path, "worker", "--cpu", "--until-empty")
    assert r.exit_code == 1, r.output
    out = r.output
    assert ("worker stopped: 2 queued job(s) can never run: blocked by job 1 (resnet14 "
            "vanilla s0), failed: NonFiniteLoss: non-finite training loss") in out
    assert "`kdrun retry 1`" in out and "worker done: 1 job(s) run (1 failed)" in out
    # output to a pipe: timestamped, never wrapped
    lines = [x for x in out.splitlines() if x.strip()]
    assert all(re.match(STAMP, x) for x in lines) and max(map(len, lines)) > 120

    r = cli(tmp_path, "status")
    assert "2 (2 blocked)" in r.output and "1 resnet14 vanilla s0" in r.output
    assert "traceback and log: `kdrun show ID`" in flat(r.output)
    s = json.loads(cli(tmp_path, "status", "--json").output)
    assert s["counts"]["blocked"] == 2 and s["counts"]["queued"] == 2
    students = [j for j in s["jobs"] if j["kind"] == "student"]
    assert [j["label"] for j in students] == ["resnet14->resnet8 kd(T=2) s0",
                                              "resnet14->resnet8 kd(T=8) s0"]
    assert all(j["blocked_by"]["id"] == 1 and j["blocked_by"]["error"].startswith(
        "NonFiniteLoss") for j in students)
    assert students[0]["config"]["method"]["params"]["T"] == 2.0
    r = cli(tmp_path, "report", "--table", "top1", "--format", "json")
    cells = [x for x in json.loads(r.output[r.output.index("{"):])["rows"] if x["n"] == 0
             and x.get("blocked")]
    assert len(cells) == 2, r.output

    # the run folder explains itself: job.yaml, a timestamped log that ends with the error
    run = tmp_path / "runs" / s["jobs"][0]["run_dir"]
    assert run.name.startswith("000001-resnet14-vanilla-s0-")
    assert yaml.safe_load((run / "job.yaml").read_text())["config"]["recipe"]["lr"] == 1e12
    log = (run / "train.log").read_text()
    assert re.match(rf"--- {STAMP} job 1 resnet14 vanilla s0: attempt 1", log)
    assert "attempt 1 failed: NonFiniteLoss" in log and log.rstrip().endswith(
        "non-finite training loss (nan) in epoch 1")
    r = cli(tmp_path, "show", "1")
    assert r.exit_code == 0 and "Traceback" in r.output and "lr: 1000000000000.0" in r.output
    assert "attempts" in r.output and "job.yaml" in r.output and run.name in r.output
    r = cli(tmp_path, "show", "2")
    assert "blocked by job 1" in flat(r.output) and "not started yet" in r.output
    assert cli(tmp_path, "logs", "1").output == log
    assert cli(tmp_path, "logs", "1", "-f").output == log  # finished: prints all, returns
    r = cli(tmp_path, "logs", "2")
    assert r.exit_code == 2 and "has not started yet" in r.output

    r = cli(tmp_path, "retry", "1")
    assert r.exit_code == 0 and "2 job(s) blocked by them will run once they succeed" in r.output
    assert json.loads(cli(tmp_path, "status", "--json").output)["counts"]["blocked"] == 0


def test_sweep_points_have_their_own_labels_and_run_folders(tmp_path):
    specs = expand(tiny_grid(methods=["vanilla", {"kd": {"T": [2, 8]}}, {"dkd": {}}],
                             seeds=[0]))[1]
    assert [sp.label for sp in specs] == [
        "resnet14 vanilla s0", "resnet8 vanilla s0", "resnet14->resnet8 kd(T=2) s0",
        "resnet14->resnet8 kd(T=8) s0", "resnet14->resnet8 dkd s0"]
    kd2, kd8 = specs[2:4]
    assert labels.run_dir_name(3, kd2.config) != labels.run_dir_name(3, kd8.config)
    assert labels.run_dir_name(3, kd2.config).startswith("000003-resnet14-resnet8-kd-s0-")
    # a recipe sweep is named too; an explicitly set value is shown even when not swept
    grid = tiny_grid(methods=[{"kd": {"T": 3}}], seeds=[0],
                     pairs=[{"teacher": "resnet14", "student": "resnet8",
                             "recipe": {"lr": [0.01, 0.05]}}])
    assert [sp.label for sp in expand(grid)[1][1:]] == [
        "resnet14->resnet8 kd(T=3, recipe.lr=0.01) s0",
        "resnet14->resnet8 kd(T=3, recipe.lr=0.05) s0"]


def test_upgrade_labels_the_jobs_already_queued(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db, "0004")  # before labels were stored
    cols = ("hash", "grid", "kind", "dataset", "student", "method", "seed", "config",
            "priority", "state", "attempts", "max_attempts", "not_before", "epoch",
            "created_at")
    jobs_t = sa.table("kdrun_jobs", *(sa.column(c, sa.JSON if c == "config" else None)
                                      for c in cols))
    with db.write() as s:
        for sp in expand(sweep_grid())[1]:
            s.execute(sa.insert(jobs_t).values(
                hash=sp.hash, grid="g", kind=sp.kind, dataset=sp.dataset, student=sp.student,
                method=sp.method, seed=sp.seed, config=sp.config, priority=0, state="queued",
                attempts=0, max_attempts=3, not_before=0.0, epoch=0, created_at=0.0))
    migrate.upgrade(db)
    with db.read() as s:
        assert list(s.scalars(sa.select(Job.label).order_by(Job.id))) == [
            "resnet14 vanilla s0", "resnet14->resnet8 kd(T=2) s0", "resnet14->resnet8 kd(T=8) s0"]


def test_breaker_stops_on_the_same_deterministic_failure(tmp_path, monkeypatch):
    b = FailureBreaker(limit=5, window_s=60)
    missing = Outcome("failed", "UserError: CIFAR-100 not found", suspect=False)
    assert b.record(missing) is None and b.record(missing) is None
    assert "3 jobs in a row failed with the same error" in b.record(missing)
    b = FailureBreaker(limit=5, window_s=60)
    for note in ("NaN in job 1", "NaN in job 2", "NaN in job 3"):  # different: no pattern
        assert b.record(Outcome("failed", note, suspect=False)) is None

    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    grid = tiny_grid(methods=["vanilla"], seeds=list(range(6)))
    queue.enqueue(db, "g", [sp for sp in expand(grid)[1] if sp.kind == "student"])

    def no_data(db, claim, *args, **kwargs) -> Outcome:
        queue.fail(db, claim, "UserError: CIFAR-100 not found", retry=False)
        return Outcome("failed", "UserError: CIFAR-100 not found", suspect=False)

    monkeypatch.setattr("kdrun.worker.loop.supervise", no_data)
    summary = work(db, WorkerOptions(tmp_path, tmp_path, until_empty=True, poll_seconds=0.05),
                   log=lambda m: None)
    assert summary.failed_over and summary.jobs == 3
    assert queue.counts(db) == {"failed": 3, "queued": 3}


def test_missing_dataset_is_refused_at_enqueue(tmp_path):
    g = write_grid(tmp_path / "c.yaml", tiny_grid(dataset={"name": "cifar100"}))
    base = ["--db", f"sqlite:///{tmp_path / 'kdrun.db'}", "--data-dir", str(tmp_path / "none")]
    r = CliRunner().invoke(app, [*base, "enqueue", "--grid", str(g)])
    assert r.exit_code == 2 and "CIFAR-100 not found under" in flat(r.output)
    assert "--download" in r.output and "--no-data-check" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "kdrun.db").exists()
    r = CliRunner().invoke(app, [*base, "enqueue", "--grid", str(g), "--dry-run"])
    assert r.exit_code == 0 and "warning: CIFAR-100 not found" in flat(r.output)
    r = CliRunner().invoke(app, [*base, "enqueue", "--grid", str(g), "--no-data-check"])
    assert r.exit_code == 0 and "added 5 jobs" in r.output


def test_former_tracebacks_and_silent_no_ops_are_one_line(tmp_path):
    db = new_db(tmp_path, sweep_grid())
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'kdrun.db'}", "--runs-dir",
                                 str(tmp_path / "afile"), "worker", "--cpu", "--until-empty"])
    assert r.exit_code == 2 and "is a file, not a folder" in r.output
    assert queue.counts(db) == {"queued": 3}  # nothing claimed, nothing left running
    r = cli(tmp_path, "enqueue", "--grid", str(tmp_path))
    assert r.exit_code == 2 and "is a folder, not a grid file; grid files in it: g.yaml" in flat(
        r.output)
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    r = cli(tmp_path, "enqueue", "--grid", str(tmp_path / "latin1.yaml"))
    assert r.exit_code == 2 and "line 1: not UTF-8 text (byte 0xe9)" in flat(r.output)
    r = CliRunner().invoke(app, ["--db", "path/new.db", "status"])
    assert r.exit_code == 2 and "write sqlite:///path/new.db" in flat(r.output)
    r = cli(tmp_path, "teacher", "cache", "--help")  # (a 10-class import: test_teachers.py)
    assert "auto|fp16|fp32" in r.output and "alias bf16" in flat(r.output)

    claim = queue.claim(db, "w", 60)  # job 1 (the teacher) running
    for args, message in [
        (("cancel", "99"), "no job 99"),
        (("cancel", "--grid", "nope"), "--grid 'nope': no jobs of that grid"),
        (("status", "--grid", "nope"), "grids: tiny"),
        (("retry", "1"), "nothing to retry: job 1 is running; only failed or cancelled"),
    ]:
        r = cli(tmp_path, *args)
        assert r.exit_code == 2 and message in flat(r.output), (args, r.output)
        assert "Traceback" not in r.output
    queue.fail(db, claim, "RuntimeError: boom", retry=False)
    r = cli(tmp_path, "cancel", "1")
    assert r.exit_code == 2 and "job 1 is failed; only queued or running" in flat(r.output)
    r = cli(tmp_path, "cancel", "1", "2")
    assert r.exit_code == 0 and "cancelled 1 job(s); left alone: job 1 (failed)" in r.output
    r = cli(tmp_path, "report", "--methods", "kdd")
    assert r.exit_code == 2 and "--methods: no jobs for kdd; methods in the database: kd" in flat(
        r.output)
    r = cli(tmp_path, "report", "--pairs", "x->y")
    assert r.exit_code == 2 and "pairs in the database: resnet14->resnet8" in flat(r.output)
    assert "nan" not in r.output


def test_status_fits_80_columns_and_tells_a_stall_from_a_renewal(tmp_path, monkeypatch):
    db = new_db(tmp_path, tiny_grid(methods=["vanilla"]))
    worker = "gpu-node-17.cluster.example.org:123456:cuda0#0"
    queue.claim(db, worker, lease_seconds=300)
    c2 = queue.claim(db, "gpu-node-18:77:cuda1#0", lease_seconds=300)
    with db.write() as s:  # job 1's renewal is on time; the other's stopped 10 minutes ago
        s.execute(update(Job).where(Job.id == 1).values(
            heartbeat_at=Job.heartbeat_at - 40, lease_expires_at=Job.lease_expires_at - 40))
        s.execute(update(Job).where(Job.id == c2.job_id).values(
            heartbeat_at=Job.heartbeat_at - 600, lease_expires_at=Job.lease_expires_at - 600))
    narrow = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    narrow.print(jobs.render(db, None, width=80))
    text = narrow.export_text()
    assert max(len(x) for x in text.splitlines()) <= 80
    assert "gpu-node-17:123456:cuda0#0" in text and "gpu-node-18:77:cuda1#0" in text
    assert "resnet14 vanilla s0" in text and "resnet8 vanilla s0" in text
    assert re.search(r"\b4\ds/75s", text) and re.search(r"LATE 10m0\ds/75s", text)

    calls = []

    def sleep(_s):  # two refreshes, then Ctrl-C
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    r = cli(tmp_path, "status", "--watch", "--json", "--interval", "0.2")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 0 and len(lines) == 2
    assert [json.loads(x)["counts"]["running"] for x in lines] == [2, 2]


def test_missing_teacher_checkpoint_says_to_share_the_runs_dir(tmp_path):
    from kdrun.train.trainer import Run, teacher_path

    spec = expand(sweep_grid())[1][1]
    run = Run(spec.config, tmp_path / "run", tmp_path, teacher_checkpoint=tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="all workers must share one --runs-dir"):
        teacher_path(run)
