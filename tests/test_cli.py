"""The whole slice through the command line: enqueue -> worker -> status -> report."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from tests.helpers import cli, tiny_grid, write_grid


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone (long temporary paths wrap at 80 columns)."""
    return " ".join(text.split())


def test_dry_run_writes_nothing(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", tiny_grid())
    r = cli(tmp_path, "enqueue", "--grid", str(grid), "--dry-run")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "dataset synthetic, 5 jobs" in out and "dry run: nothing written" in out
    assert "jobs: 1 teacher trained first, 2 students trained alone, 2 distilled" in out
    assert "all 5 jobs are new" in out
    assert not (tmp_path / "kdrun.db").exists()


def test_invalid_grid_is_one_line_and_inserts_nothing(tmp_path):
    good = write_grid(tmp_path / "good.yaml", tiny_grid())
    assert cli(tmp_path, "enqueue", "--grid", str(good)).exit_code == 0
    bad = tiny_grid(seeds=[5, 6])
    bad["pairs"].append({"teacher": "resnet14", "student": "nope"})
    r = cli(tmp_path, "enqueue", "--grid", str(write_grid(tmp_path / "bad.yaml", bad)))
    assert r.exit_code == 2
    assert "pairs[1].student: unknown architecture 'nope'" in flat(r.output)
    assert "Traceback" not in r.output
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 5


def test_commands_on_missing_database_say_what_to_do(tmp_path):
    r = cli(tmp_path, "status")
    assert r.exit_code == 2 and "create one with `kdrun enqueue`" in flat(r.output)
    r = cli(tmp_path, "db", "upgrade")
    assert r.exit_code == 0 and "upgraded empty ->" in flat(r.output)
    r = cli(tmp_path, "db", "current")
    assert "up to date" in flat(r.output)


def test_enqueue_worker_report_end_to_end(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", tiny_grid())
    r = cli(tmp_path, "enqueue", "--grid", str(grid))
    assert r.exit_code == 0 and "added 5 jobs" in r.output, r.output
    r = cli(tmp_path, "enqueue", "--grid", str(grid))
    assert "nothing added" in r.output
    r = cli(tmp_path, "worker", "--cpu", "--until-empty")
    assert r.exit_code == 0, r.output
    assert "5 job(s) run" in r.output
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 5
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 10  # 5 jobs x 2 epochs
        job = s.execute(select(Job).where(Job.method == "kd")).scalars().first()
        assert job.state == "succeeded" and job.torch_version and job.device_name == "cpu"
        m = s.execute(select(EpochMetric).where(EpochMetric.job_id == job.id)).scalars().first()
        assert set(m.components) == {"ce", "kd"}
        res = s.get(Result, job.id)
        assert res.teacher_top1 is not None and res.agree_top1 is not None
    assert (tmp_path / "runs" / job.run_dir / "model.pt").exists()

    r = cli(tmp_path, "status")
    assert r.exit_code == 0 and "succeeded" in r.output
    r = cli(tmp_path, "report", "--table", "top1", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[r.output.index("{"):])["rows"]
    kd = [x for x in rows if x["row"] == "kd"]
    assert len(kd) == 1 and kd[0]["n"] == 2 and kd[0]["pair"] == "resnet14->resnet8"
    r = cli(tmp_path, "report", "--table", "nope")
    assert r.exit_code == 2 and "valid tables" in r.output
