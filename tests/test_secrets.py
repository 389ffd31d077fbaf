"""Database passwords in every form (URL user-info, `?password=`, PGPASSWORD) never appear in
output, logs, run directories or the training process's environment; malformed URLs and
files that are not checkpoints are one line."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from kdrun.cli import app
from kdrun.db.engine import redact, scrub
from tests.helpers import tiny_grid, write_grid

USERINFO, QUERY, ENV = "S3cr3t-userinfo", "S3cr3t-query", "S3cr3t-env"


def test_redact_masks_every_password_form():
    for url in (f"postgresql+psycopg://u:{USERINFO}@h/db",
                f"postgresql+psycopg://u@h/db?password={QUERY}",
                f"postgresql+psycopg://u:{USERINFO}@h:notaport/db?password={QUERY}",
                f"postgresql+psycopg://u:{USERINFO}@h/db?sslpassword={QUERY}"):
        shown = redact(url) + scrub(f"failed: {url}", url)
        assert USERINFO not in shown and QUERY not in shown and "***" in shown


@pytest.mark.parametrize("url, says", [
    (f"postgresql://u:{USERINFO}@h:notaport/db", "bad port"),
    (f"postgresql://u:{USERINFO}@h:99999/db", "port 99999 is out of range"),
    (f"mysql://u:{USERINFO}@h/db", "unsupported database 'mysql'"),
])
def test_malformed_urls_are_one_line(url, says, tmp_path):
    r = CliRunner().invoke(app, ["--db", url, "status"])
    assert r.exit_code == 2 and says in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and USERINFO not in r.output


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    r = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'k.db'}", "--data-dir",
                                 str(tmp_path), "teacher", "import", str(passwd), "--arch",
                                 "resnet8", "--dataset", "synthetic"])
    assert r.exit_code == 2, r.output
    assert "is not a PyTorch checkpoint" in r.output and "passwd" in r.output
    assert "Traceback" not in r.output


def test_a_refused_pickle_names_the_offending_global(tmp_path):
    import argparse

    import torch

    from kdrun import checkpoints
    from kdrun.errors import UserError

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UserError) as e:
        checkpoints.load(path)
    msg = str(e.value)
    assert "refused as unsafe" in msg and "argparse.Namespace" in msg
    assert "weights_only=False" not in msg and "\n" not in msg


@pytest.mark.postgres
def test_no_password_form_leaks_anywhere(pg_url, tmp_path, monkeypatch):
    url = make_url(pg_url).set(password=USERINFO).update_query_dict({"password": QUERY})
    url = url.render_as_string(hide_password=False)
    monkeypatch.setenv("PGPASSWORD", ENV)  # trust auth: every password is accepted
    monkeypatch.setenv("KDRUN_DB", url)
    envs: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):  # the training process's environment
        envs.append(dict(kwargs.get("env") or {}))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr("kdrun.worker.supervisor.subprocess.Popen", popen)
    grid = write_grid(tmp_path / "g.yaml", tiny_grid(recipe={
        "epochs": 1, "batch_size": 16, "lr": 0.05, "lr_milestones": [], "eval_batch_size": 16}))
    runs = tmp_path / "runs"
    base = ["--runs-dir", str(runs), "--data-dir", str(tmp_path)]
    outputs = []
    for args in (["enqueue", "--grid", str(grid)], ["enqueue", "--grid", str(grid)],
                 ["status"], ["status", "--json"],
                 ["worker", "--cpu", "--until-empty", "--max-jobs", "1",
                  "--lease-seconds", "30"],
                 ["show", "1"], ["logs", "1"], ["report", "--table", "top1"],
                 ["export", "--format", "json"]):
        r = CliRunner().invoke(app, [*base, *args])
        outputs.append(r.output)
    down = make_url(url).set(port=1).render_as_string(hide_password=False)
    r = CliRunner().invoke(app, ["--db", down, *base, "status"])
    assert r.exit_code == 2 and "cannot use" in r.output
    outputs.append(r.output)
    assert "succeeded" in outputs[4], outputs[4]
    assert envs, "no training process was started"
    files = b"".join(p.read_bytes() for p in runs.rglob("*") if p.is_file())
    for secret in (USERINFO, QUERY, ENV):
        for out in outputs:
            assert secret not in out, out
        assert secret.encode() not in files
        for env in envs:
            assert not any(secret in v for v in env.values())
