"""The teacher registry end to end: import (cifar_teachers .tar, single files), refusals that
register nothing, grids naming registered teachers, a KD job from an imported teacher, a
changed checkpoint failing its job, trained teachers in the registry; and `kdrun models`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from kdrun import grid as grid_mod
from kdrun.cli import app
from kdrun.cli.app import console
from kdrun.db.engine import Database
from kdrun.db.models import Job, Result, Teacher
from kdrun.errors import UserError
from tests.fixtures_data import cifar_teachers_tar, save_kdrun_checkpoint, write_cifar100

RECIPE = {"epochs": 1, "batch_size": 64, "lr": 0.05, "lr_milestones": [1], "eval_batch_size": 128}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch) -> None:
    """Tables as on a wide terminal, so names are not folded across lines."""
    monkeypatch.setattr(console, "width", 200)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_cifar100(d)
    return d


def kdrun(tmp: Path, data_dir: Path, *args: str):
    base = ["--db", f"sqlite:///{tmp / 'kdrun.db'}", "--runs-dir", str(tmp / "runs"),
            "--data-dir", str(data_dir)]
    return CliRunner().invoke(app, [*base, *args])


def registry(tmp: Path) -> list[Teacher]:
    db = Database(f"sqlite:///{tmp / 'kdrun.db'}")
    with db.read() as s:
        return list(s.execute(select(Teacher).order_by(Teacher.name)).scalars())


def grid_file(tmp: Path, teachers: dict, dataset=None, name: str = "g") -> str:
    g = {"name": name, "dataset": dataset or {"name": "cifar100"}, "recipe": RECIPE,
         "teachers": teachers, "pairs": [{"teacher": next(iter(teachers)), "student": "resnet8"}],
         "methods": ["kd"], "seeds": [0]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(g))
    return str(path)


def test_cifar_teachers_tar_imports_and_a_kd_job_trains_from_it(tmp_path, data_dir):
    ck = tmp_path / "ckpts"
    tar = cifar_teachers_tar(tmp_path / "cifar_teachers.tar", {
        "resnet8_vanilla": save_kdrun_checkpoint(ck / "a.pth", "resnet8", seed=1),
        "resnet14_vanilla": save_kdrun_checkpoint(ck / "b.pth", "resnet14", layout="module"),
    })
    r = kdrun(tmp_path, data_dir, "teacher", "import", str(tar))
    assert r.exit_code == 0, r.output
    rows = registry(tmp_path)
    assert [(t.name, t.arch, t.dataset, t.num_classes, t.source) for t in rows] == [
        ("resnet14", "resnet14", "cifar100", 100, "import"),
        ("resnet8", "resnet8", "cifar100", 100, "import")]
    assert all(t.top1 is not None and 0 <= t.top1 <= t.top5 <= 100 for t in rows)
    teachers_dir = tmp_path / "runs" / "teachers"
    assert sorted(p.relative_to(teachers_dir).as_posix() for p in teachers_dir.rglob("*")
                  if p.is_file()) == ["resnet14/ckpt_epoch_240.pth", "resnet8/ckpt_epoch_240.pth"]
    assert all(Path(t.path) == (teachers_dir / t.name / "ckpt_epoch_240.pth").resolve()
               for t in rows)

    r = kdrun(tmp_path, data_dir, "teacher", "list")
    assert r.exit_code == 0 and "resnet14" in r.output and "import" in r.output

    r = kdrun(tmp_path, data_dir, "teacher", "import", str(tar))  # idempotent
    assert r.exit_code == 0 and r.output.count("already registered") == 2, r.output
    assert len(registry(tmp_path)) == 2

    g = grid_file(tmp_path, {"resnet8": {"registered": True}})
    r = kdrun(tmp_path, data_dir, "enqueue", "--grid", g)
    assert r.exit_code == 0 and "added 1 jobs" in r.output, r.output
    r = kdrun(tmp_path, data_dir, "worker", "--cpu", "--until-empty")
    assert r.exit_code == 0, r.output
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
        assert job.state == "succeeded", job.error
        assert job.config["teacher"] == {"name": "resnet8", "arch": "resnet8",
                                         "checkpoint": rows[1].path, "sha256": rows[1].sha256}
        # The job's final evaluation of the teacher equals the import's measurement.
        assert s.get(Result, job.id).teacher_top1 == pytest.approx(rows[1].top1)


def _tar_of(tmp: Path, folder: str, ckpt: Path) -> Path:
    return cifar_teachers_tar(tmp / "t.tar", {folder: ckpt})


def _wrong_arch(tmp: Path):
    return [str(save_kdrun_checkpoint(tmp / "r8.pth", "resnet8")), "--arch", "resnet14"], \
        "does not match the architecture"


def _wrong_folder(tmp: Path):
    return [str(_tar_of(tmp, "resnet14_vanilla", save_kdrun_checkpoint(tmp / "r8.pth",
                                                                       "resnet8")))], \
        "(as resnet14, 100 classes) does not match the architecture: "


def _wrong_classes(tmp: Path):
    return [str(save_kdrun_checkpoint(tmp / "r8.pth", "resnet8", num_classes=10)),
            "--arch", "resnet8"], ("its classifier has 10 classes but --dataset cifar100 has "
                                   "100; import it with the --dataset it was trained on")


def _truncated(tmp: Path):
    good = save_kdrun_checkpoint(tmp / "r8.pth", "resnet8")
    bad = tmp / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return [str(bad)], "is corrupt or truncated"


def _not_weights_only(tmp: Path):
    sd = torch.load(save_kdrun_checkpoint(tmp / "r8.pth", "resnet8"), weights_only=True)
    path = tmp / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({**sd, "opt": argparse.Namespace(lr=0.05)}, path)  # code, not data
    return [str(path)], "refused as unsafe: it needs GLOBAL argparse.Namespace"


def _one_bad_in_archive(tmp: Path):
    tar = cifar_teachers_tar(tmp / "t.tar", {
        "resnet8_vanilla": save_kdrun_checkpoint(tmp / "a.pth", "resnet8"),
        "vgg8_vanilla": save_kdrun_checkpoint(tmp / "b.pth", "resnet8")})
    return [str(tar)], "vgg8_vanilla/ckpt_epoch_240.pth (as vgg8, 100 classes) does not match"


def _truncated_member(tmp: Path):
    good = save_kdrun_checkpoint(tmp / "a.pth", "resnet8")
    half = tmp / "half.pth"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return [str(_tar_of(tmp, "resnet8_vanilla", half))], \
        "t.tar:cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth is corrupt or truncated"


def _truncated_archive(tmp: Path):
    tar = _tar_of(tmp, "resnet8_vanilla", save_kdrun_checkpoint(tmp / "a.pth", "resnet8"))
    tar.write_bytes(tar.read_bytes()[:3000])
    return [str(tar)], "is corrupt or truncated"


@pytest.mark.parametrize("case", [_wrong_arch, _wrong_folder, _wrong_classes, _truncated,
                                  _not_weights_only, _one_bad_in_archive, _truncated_member,
                                  _truncated_archive])
def test_bad_checkpoints_are_refused_in_one_line_and_register_nothing(tmp_path, data_dir, case):
    args, reason = case(tmp_path)
    r = kdrun(tmp_path, data_dir, "teacher", "import", *args)
    assert r.exit_code == 2, r.output
    assert reason in r.output and "Traceback" not in r.output
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) <= 3
    assert registry(tmp_path) == []
    assert not [p for p in (tmp_path / "runs" / "teachers").rglob("*") if p.is_file()]


def test_single_files_in_every_layout(tmp_path, data_dir):
    raw = save_kdrun_checkpoint(tmp_path / "model.pt", "resnet8", layout="raw")
    r = kdrun(tmp_path, data_dir, "teacher", "import", str(raw), "--no-eval")  # by shapes
    assert r.exit_code == 0, r.output
    (t,) = registry(tmp_path)
    assert t.arch == "resnet8" and t.name == "resnet8" and t.top1 is None
    assert t.path == str(raw.resolve())
    for i, layout in enumerate(("state_dict", "module", "model")):
        f = save_kdrun_checkpoint(tmp_path / f"{layout}.pth", "resnet14", seed=i, layout=layout)
        r = kdrun(tmp_path, data_dir, "teacher", "import", str(f), "--arch", "resnet14",
                  "--name", f"t-{layout}")
        assert r.exit_code == 0, r.output
    assert {t.name for t in registry(tmp_path)} >= {"t-state_dict", "t-module", "t-model"}
    r = kdrun(tmp_path, data_dir, "teacher", "import", str(raw), "--name", "t-model")
    assert r.exit_code == 2 and "a different teacher is already registered as 't-model'" in r.output
    r = kdrun(tmp_path, data_dir, "teacher", "import", str(raw), "--name", "../x")
    assert r.exit_code == 2 and "use letters, digits" in r.output
    assert len(registry(tmp_path)) == 4


def test_changed_teacher_checkpoint_fails_the_job_and_the_next_enqueue(tmp_path, data_dir):
    f = save_kdrun_checkpoint(tmp_path / "teacher.pth", "resnet8", layout="raw")
    assert kdrun(tmp_path, data_dir, "teacher", "import", str(f), "--name", "t",
                 "--no-eval").exit_code == 0
    g = grid_file(tmp_path, {"t": {"registered": True}})
    assert kdrun(tmp_path, data_dir, "enqueue", "--grid", g).exit_code == 0
    save_kdrun_checkpoint(f, "resnet8", seed=7, layout="raw")  # same shapes, new weights
    r = kdrun(tmp_path, data_dir, "worker", "--cpu", "--until-empty")
    assert r.exit_code == 0, r.output
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
    assert job.state == "failed" and job.attempts == 1
    assert "changed since enqueue (sha256 differs)" in job.error
    r = kdrun(tmp_path, data_dir, "enqueue", "--grid", grid_file(tmp_path, {"t": {
        "registered": True}}, name="g2"))
    assert r.exit_code == 2 and "changed since it was registered" in r.output


def test_trained_teacher_joins_the_registry_and_grids_can_name_it(tmp_path, data_dir):
    ds = {"name": "synthetic", "num_classes": 4, "train_size": 48, "test_size": 16}
    g = grid_file(tmp_path, {"resnet8": {"train": True}}, dataset=ds)
    assert kdrun(tmp_path, data_dir, "enqueue", "--grid", g).exit_code == 0
    r = kdrun(tmp_path, data_dir, "worker", "--cpu", "--max-jobs", "1")  # the teacher only
    assert r.exit_code == 0, r.output
    (t,) = registry(tmp_path)
    assert (t.source, t.arch, t.dataset, t.num_classes) == ("trained", "resnet8", "synthetic", 4)
    assert t.job_id is not None and t.top1 is not None
    r = kdrun(tmp_path, data_dir, "teacher", "list")
    assert t.name in r.output and "trained" in r.output

    r = kdrun(tmp_path, data_dir, "enqueue", "--grid", grid_file(
        tmp_path, {"mine": {"registered": t.name}}, dataset=ds, name="g2"), "--dry-run")
    assert r.exit_code == 0, r.output
    r = kdrun(tmp_path, data_dir, "enqueue", "--grid", grid_file(
        tmp_path, {"mine": {"registered": t.name}}, name="g3"))
    assert r.exit_code == 2
    assert f"teacher '{t.name}' was registered for synthetic (4 classes)" in r.output


def test_grid_registered_teacher_errors(tmp_path):
    rows = {"t1": {"arch": "resnet8", "dataset": "cifar100", "num_classes": 100,
                   "path": "/x/t1.pth", "sha256": "ab" * 32}}

    def lookup(name):
        if name not in rows:
            raise UserError(f"no registered teacher {name!r}; registered: {', '.join(rows)}")
        return rows[name]

    def expand(teachers):
        g = yaml.safe_load(Path(grid_file(tmp_path, teachers)).read_text())
        return grid_mod.expand(g, teacher_lookup=lookup)

    _, specs = expand({"x": {"registered": "t1"}})
    assert specs[0].config["teacher"] == {"name": "x", "arch": "resnet8",
                                          "checkpoint": "/x/t1.pth", "sha256": "ab" * 32}
    with pytest.raises(UserError, match="teachers.t2.registered: no registered teacher 't2'; "
                                        "registered: t1"):
        expand({"t2": {"registered": True}})
    with pytest.raises(UserError, match="teachers.t1.arch: 'vgg8', but registered teacher"):
        expand({"t1": {"registered": True, "arch": "vgg8"}})
    with pytest.raises(UserError, match="give exactly one of"):
        expand({"t1": {"registered": True, "train": True}})
    with pytest.raises(UserError, match="registered teachers are read from the database"):
        grid_mod.expand(yaml.safe_load(Path(grid_file(tmp_path, {"t1": {"registered": True}}))
                                       .read_text()))


def test_models_command_lists_the_zoo(tmp_path):
    r = CliRunner().invoke(app, ["models", "--dataset", "cifar100"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if " resnet32x4 " in x)
    assert "7.43M" in line and "1.08G" in line
    assert "ResNet152" not in r.output
    r = CliRunner().invoke(app, ["models"])
    assert "ResNet152" in r.output and "imagenet" in r.output
    r = CliRunner().invoke(app, ["models", "--dataset", "mnist"])
    assert r.exit_code == 2 and "valid zoos are cifar100, imagenet" in r.output
