"""`kdrun slurm submit` without a cluster: the script it writes (no secret in it) and one-line
errors for bad input or a missing `sbatch`, leaving the database unchanged."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kdrun.cli import app
from kdrun.db import migrate
from kdrun.db.engine import Database
from kdrun.slurm import pilots


@pytest.fixture
def db_file(tmp_path) -> str:
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}", create=True)
    migrate.upgrade(db)
    return f"sqlite:///{tmp_path / 'kdrun.db'}"


def run(tmp_path, url: str, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["--db", url, "--runs-dir", str(tmp_path / "runs"),
                                    "--data-dir", str(tmp_path / "data"), "slurm", *args],
                              env=env)


def test_dry_run_prints_the_array_script(tmp_path, db_file):
    r = run(tmp_path, db_file, "submit", "--workers", "8", "--gpus-per-worker", "2",
            "--max-running", "3", "--time", "4:00:00", "--partition", "gpu", "--account", "lab",
            "--grace", "300", "--sbatch-arg=--mem=32G", "--setup", "module load cuda/12",
            "--dry-run", env={"PATH": str(tmp_path / "empty")})  # no Slurm: KillWait unknown
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for d in ("--array=0-7%3", "--gres=gpu:2", "--time=4:00:00", "--partition=gpu",
              "--account=lab", "--signal=B:USR1@300", "--mem=32G", "--requeue"):
        assert f"#SBATCH {d}" in lines
    assert lines.index("module load cuda/12") < next(
        i for i, x in enumerate(lines) if x.startswith("exec "))
    assert "worker --gpu all --until-empty --idle-exit 300 --stop-within 20" in r.output
    assert f"--runs-dir {tmp_path / 'runs'}" in r.output
    assert "kdrun.db" not in r.output and "--db" not in r.output  # the URL travels by env
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    assert "worker --cpu" in run(tmp_path, db_file, "submit", "--dry-run").output


def test_stop_within_must_leave_time_before_killwait(tmp_path, db_file, monkeypatch):
    monkeypatch.setattr("kdrun.slurm.commands.kill_wait", lambda: 30)
    assert run(tmp_path, db_file, "submit", "--dry-run").output.endswith("--stop-within 25\n")
    r = run(tmp_path, db_file, "submit", "--stop-within", "28", "--dry-run")
    assert r.exit_code == 2 and "KillWait is 30 s" in r.output and "at most 25" in r.output


def test_submit_without_sbatch_is_one_line_and_changes_nothing(tmp_path, db_file):
    r = run(tmp_path, db_file, "submit", "--workers", "2",
            env={"PATH": str(tmp_path / "empty")})
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: sbatch not found on PATH: `kdrun slurm` needs Slurm's client commands (run it "
        "on a login node of the cluster, or install slurm-client)"]
    assert pilots.listing(Database(db_file)) == []
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--time", "soon"], "--time 'soon': expected one of MINUTES"),
    (["--nodes-per-worker", "0"], "--nodes-per-worker 0: must be at least 1"),
    (["--sbatch-arg", "mem=1G"], "pass a whole sbatch option"),
    (["--gpus-per-worker", "-1"], "must be 0 (CPU) or more"),
])
def test_bad_submit_options_are_one_line(tmp_path, db_file, args, message):
    r = run(tmp_path, db_file, "submit", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_status_with_no_pilots(tmp_path, db_file):
    r = run(tmp_path, db_file, "status")
    assert r.exit_code == 0 and "no live pilots" in r.output
