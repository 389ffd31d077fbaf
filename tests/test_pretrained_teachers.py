"""Teacher sources checked at enqueue: torchvision's pretrained weights (resolved by weights
name to the file in a temporary TORCH_HOME hub cache, verified, loaded strictly into kdrun's
model), checkpoints of the wrong architecture or class count, registered teachers declared
under another architecture's name; `kdrun teacher fetch / list`; the report's teacher row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from kdrun import checkpoints, pretrained
from kdrun import grid as grid_mod
from kdrun.cli import app
from kdrun.cli.app import console
from kdrun.db.engine import Database
from kdrun.db.models import Job, Teacher
from kdrun.errors import UserError
from kdrun.report import accuracy
from kdrun.train.trainer import Run, build_teacher
from tests.fixtures_data import save_kdrun_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = {"epochs": 1, "batch_size": 8, "lr": 0.1, "lr_milestones": [1]}
IMAGENET = {"name": "imagenet", "num_classes": 1000}


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch) -> None:
    monkeypatch.setattr(console, "width", 250)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[bytes, dict]:
    """torchvision's own resnet18 layout (its module, not kdrun's), saved as torchvision's
    weights files are: a plain state dict."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    sd = resnet18().state_dict()
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(sd, path)
    return path.read_bytes(), sd


def place(home: Path, blob: bytes, monkeypatch) -> Path:
    """The file under the exact name torchvision expects, in the hub cache. Its sha256 cannot
    start with torchvision's published prefix (f37072fd), so the test stands in its own
    prefix for the published one; every other step is the real one."""
    path = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    digest = checkpoints.sha256(path)
    real = pretrained._hash_prefix
    monkeypatch.setattr(pretrained, "_hash_prefix",
                        lambda f: digest[:8] if f == path.name else real(f))
    return path


def expand(teachers: dict, dataset=None, student: str = "ResNet18", lookup=None):
    g = {"name": "g", "dataset": dataset or IMAGENET, "recipe": RECIPE, "teachers": teachers,
         "pairs": [{"teacher": next(iter(teachers)), "student": student}], "methods": ["kd"]}
    return grid_mod.expand(g, teacher_lookup=lookup)[1]


def test_torchvision_teacher_resolves_loads_strictly_and_catches_corruption(
        torch_home, resnet18_file, monkeypatch, tmp_path):
    blob, sd = resnet18_file
    path = place(torch_home, blob, monkeypatch)
    (spec,) = expand({"ResNet18": {"torchvision": "DEFAULT"}})
    t = spec.config["teacher"]
    assert t["torchvision"] == "ResNet18_Weights.IMAGENET1K_V1"  # DEFAULT, resolved
    assert t["url"] == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert t["file"] == path.name and t["published_top1"] == 69.758
    assert spec.depends_on is None  # nothing to wait for

    run = Run(spec.config, tmp_path / "run", tmp_path)
    model = build_teacher(run, 1000)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert set(model.state_dict()) == set(sd)  # kdrun's ResNet18 has exactly these keys

    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(UserError, match=r"resnet18-f37072fd.pth are corrupt: sha256 \w+ does "
                                        r"not start with torchvision's"):
        build_teacher(run, 1000)
    with pytest.raises(UserError, match=r"teachers.ResNet18.torchvision: .* are corrupt"):
        expand({"ResNet18": {"torchvision": "IMAGENET1K_V1"}})  # refused at enqueue too


def test_missing_weights_name_the_file_url_and_where_to_put_it(torch_home, tmp_path):
    (spec,) = expand({"ResNet34": {"torchvision": "IMAGENET1K_V1"}})  # enqueue needs no file
    with pytest.raises(UserError) as e:
        build_teacher(Run(spec.config, tmp_path / "run", tmp_path), 1000)
    msg = str(e.value)
    assert "\n" not in msg
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in msg
    assert str(torch_home / "hub" / "checkpoints" / "resnet34-b627a593.pth") in msg
    assert "kdrun teacher fetch ResNet34 --weights IMAGENET1K_V1" in msg


def test_bad_weights_values_are_refused_at_enqueue_naming_valid_ones(tmp_path, torch_home):
    with pytest.raises(UserError, match=r"teachers.ResNet50.torchvision: 'NO_SUCH' is not a "
                       r"weights value of torchvision's ResNet50_Weights; valid: IMAGENET1K_V1, "
                       r"IMAGENET1K_V2, DEFAULT"):
        expand({"ResNet50": {"torchvision": "NO_SUCH"}})
    with pytest.raises(UserError, match="no pretrained weights for kdrun's 'MobileNetV1'"):
        expand({"MobileNetV1": {"torchvision": "DEFAULT"}})
    with pytest.raises(UserError, match="ImageNet's 1000 classes; the grid's dataset is "
                                        "imagenet .10 classes"):
        expand({"ResNet18": {"torchvision": "DEFAULT"}}, {"name": "imagenet", "num_classes": 10})
    # through the CLI: one line, exit 2, nothing written
    g = tmp_path / "g.yaml"
    g.write_text(yaml.safe_dump({"dataset": "imagenet", "teachers": {
        "ResNet34": {"torchvision": "NO_SUCH"}}, "pairs": [
        {"teacher": "ResNet34", "student": "ResNet18"}], "methods": ["kd"]}))
    db = tmp_path / "k.db"
    r = CliRunner().invoke(app, ["--db", f"sqlite:///{db}", "enqueue", "--grid", str(g)])
    assert r.exit_code == 2 and "valid: IMAGENET1K_V1, DEFAULT" in r.output, r.output
    assert "Traceback" not in r.output
    if db.exists():
        with Database(f"sqlite:///{db}").read() as s:
            assert not s.execute(select(Job)).all()


def test_fetch_registers_cached_weights_and_list_shows_the_source(
        torch_home, resnet18_file, monkeypatch, tmp_path):
    place(torch_home, resnet18_file[0], monkeypatch)
    base = ["--db", f"sqlite:///{tmp_path / 'k.db'}", "--runs-dir", str(tmp_path / "runs")]
    r = CliRunner().invoke(app, [*base, "teacher", "fetch", "ResNet18"])
    assert r.exit_code == 0, r.output
    assert "in cache ResNet18_Weights.IMAGENET1K_V1 (registered as" in r.output
    with Database(f"sqlite:///{tmp_path / 'k.db'}").read() as s:
        (t,) = s.execute(select(Teacher)).scalars()
    assert (t.source, t.arch, t.num_classes) == ("torchvision", "ResNet18", 1000)
    assert t.sha256 == checkpoints.sha256(pretrained.hub_dir() / "resnet18-f37072fd.pth")
    r = CliRunner().invoke(app, [*base, "teacher", "list"])
    assert r.exit_code == 0, r.output
    assert "ResNet18_Weights.IMAGENET1K_V1" in r.output and "torchvision" in r.output
    assert "resnet152-394f9c45.pth" in r.output and "78.31" in r.output  # the catalogue
    r = CliRunner().invoke(app, [*base, "teacher", "fetch", "ResNet18", "--weights", "V9"])
    assert r.exit_code == 2 and "valid: IMAGENET1K_V1, DEFAULT" in r.output


def test_checkpoint_of_wrong_architecture_or_classes_is_refused_at_enqueue(tmp_path):
    r20 = save_kdrun_checkpoint(tmp_path / "r20.pth", "resnet20")
    ten = save_kdrun_checkpoint(tmp_path / "r8.pth", "resnet8", num_classes=10)
    cifar = {"name": "cifar100"}
    with pytest.raises(UserError, match=r"teachers.resnet56.checkpoint: .*r20.pth is not a "
                                        r"resnet56 with 100 classes \(.*\); it fits resnet20"):
        expand({"resnet56": {"checkpoint": str(r20)}}, cifar, "resnet8")
    with pytest.raises(UserError, match=r"r8.pth is a resnet8 with 10 classes; the grid's "
                                        r"dataset cifar100 has 100"):
        expand({"resnet8": {"checkpoint": str(ten)}}, cifar, "resnet8")
    (spec,) = expand({"mine": {"checkpoint": str(r20), "arch": "resnet20"}}, cifar, "resnet8")
    assert spec.config["teacher"]["arch"] == "resnet20"


def test_registered_teacher_declared_as_another_architecture_is_refused():
    row = {"arch": "resnet20", "dataset": "cifar100", "num_classes": 100, "path": "/x/t.pth",
           "sha256": "ab" * 32}
    cifar = {"name": "cifar100"}
    with pytest.raises(UserError, match=r"teachers.resnet56.registered: registered teacher "
                                        r"'resnet20' is a resnet20, not the resnet56 it is "
                                        r"declared as; .*'arch: resnet20'"):
        expand({"resnet56": {"registered": "resnet20"}}, cifar, "resnet8", lambda n: row)
    (spec,) = expand({"resnet56": {"registered": "resnet20", "arch": "resnet20"}}, cifar,
                     "resnet8", lambda n: row)  # stated explicitly: the grid means it
    assert spec.config["teacher"]["arch"] == "resnet20"
    (spec,) = expand({"best": {"registered": "resnet20"}}, cifar, "resnet8", lambda n: row)
    assert spec.config["teacher"]["name"] == "best"  # not an architecture's name: a label


def test_teacher_row_shows_torchvision_published_top1_beside_the_measured(torch_home):
    import pandas as pd

    (spec,) = expand({"ResNet34": {"torchvision": "IMAGENET1K_V1"}})
    t = spec.config["teacher"]
    df = pd.DataFrame([{"job_id": 1, "hash": spec.hash, "grid": "g", "kind": "student",
                        "dataset": "imagenet", "teacher": "ResNet34", "teacher_arch": "ResNet34",
                        "teacher_job": None, "teacher_published": t["published_top1"],
                        "student": "ResNet18", "method": "kd", "seed": 0, "state": "succeeded",
                        "params": {}, "recipe": {}, "label": "kd", "best_top1": 71.0,
                        "last_top1": 71.0, "teacher_top1": 73.2, "selection_split": "test"}])
    long = accuracy.long_table(df)
    row = long[long["row"] == "teacher"].iloc[0]
    assert (row["mean"], row["paper"], row["paper_source"]) == (73.2, 73.314, "torchvision")
    assert round(row["paper_diff"], 3) == -0.114


def test_fetch_without_network_says_where_to_put_the_file(torch_home, tmp_path, monkeypatch):
    import torch.hub

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    base = ["--db", f"sqlite:///{tmp_path / 'k.db'}"]
    r = CliRunner().invoke(app, [*base, "teacher", "fetch", "ResNet50"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    out = " ".join(r.output.split())
    assert ("downloading https://download.pytorch.org/models/resnet50-0676ba61.pth failed "
            "(<urlopen error") in out
    assert str(torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in out
