"""The exact teacher-logit cache: keys, contents, locking, use by jobs and fallbacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdrun import checkpoints, methods, models
from kdrun.cli import app
from kdrun.data.device_loader import DeviceLoader, Views
from kdrun.data.synthetic import SyntheticParams
from kdrun.data.synthetic import build as synthetic
from kdrun.methods.base import Method
from kdrun.methods.compose import make_composite
from kdrun.train import teacher_cache as tc
from kdrun.train.fast import Speed
from kdrun.train.trainer import Hooks, Run, train
from tests.fixtures_data import save_kdrun_checkpoint

CPU = torch.device("cpu")
DATASET = {"name": "synthetic", "num_classes": 4, "train_size": 16, "test_size": 16}


@pytest.fixture(scope="module")
def tiny():
    """A 6-image training set, its training loader and a random resnet8 teacher."""
    splits = synthetic(SyntheticParams(num_classes=4, train_size=6, test_size=4), Path("."))
    torch.manual_seed(0)
    teacher = models.create("resnet8", num_classes=4).eval()
    loader = DeviceLoader.from_dataset(splits.train, 5, generator=torch.Generator().manual_seed(1))
    return splits.train, loader, teacher


def test_view_keys_enumerate_every_view_once():
    views = tc.all_views(torch.tensor([0, 1, 2]), padding=4)
    assert tc.views_per_image(4) == 162 == len(views) // 3
    assert torch.equal(tc.view_key(views, 4), torch.arange(3 * 162))  # key order, no gaps
    v = Views(torch.tensor([7]), torch.tensor([3]), torch.tensor([5]), torch.tensor([True]))
    assert tc.view_key(v, 4).item() == ((7 * 9 + 3) * 9 + 5) * 2 + 1


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_cached_logits_equal_live_teacher_on_random_views(tiny, tmp_path, dtype):
    train_set, loader, teacher = tiny
    speed = Speed(CPU, amp=dtype == "fp16")  # fp16 caches hold the bf16-autocast teacher
    path = tmp_path / "c.npy"
    tc.build(teacher, loader, path, dtype, speed)
    assert np.load(path, mmap_mode="r").shape == (6, 162, 4)
    cached = tc.CachedTeacher.open(path, CPU, images=6, classes=4, padding=4)
    for _ in range(2):  # two epochs of random crops and flips
        for x, _y, views in loader.batches(with_views=True):
            got = cached(x, views)
            assert got.dtype == torch.float32
            with torch.inference_mode():
                live = teacher(x)
            if dtype == "fp32":  # exact up to how a batch is blocked
                torch.testing.assert_close(got, live, rtol=1e-5, atol=1e-6)
            else:  # the bf16 teacher's logits, held exactly; fp32's within bf16 rounding
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    live_bf16 = teacher(x).float()
                torch.testing.assert_close(got, live_bf16, rtol=2**-7, atol=1e-3)
                scale = live.abs().max().item()
                assert (got - live).abs().max().item() <= 2**-6 * scale


def test_cache_file_is_keyed_by_teacher_data_augmentation_and_dtype(tiny):
    train_set, _, _ = tiny
    spec = tc.CacheSpec("ab" * 32, tc.data_hash(train_set), 4, "fp16")
    assert spec.filename == f"{'ab' * 8}-{tc.data_hash(train_set)}-crop4flip-fp16.npy"
    other = synthetic(SyntheticParams(num_classes=4, train_size=12, test_size=4, seed=1), Path("."))
    assert tc.data_hash(other.train) != tc.data_hash(train_set)


LOCK_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from kdrun.train.teacher_cache import ensure
    path, go, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    Path(sys.argv[4]).touch()  # imported, ready to start
    while not go.exists():
        time.sleep(0.01)
    def build_to(tmp):
        with open(log, "a") as f:
            f.write("built\\n")
        time.sleep(1.5)  # long enough for the other process to reach the lock
        np.save(tmp.open("wb"), np.zeros((2, 162, 3), np.float32))
    t0 = time.perf_counter()
    built = ensure(path, build_to, log=lambda m: None)
    print(built, round(time.perf_counter() - t0, 2))
""")


def test_lock_makes_a_second_process_wait_instead_of_building(tmp_path):
    path, go, log = tmp_path / "cache" / "x.npy", tmp_path / "go", tmp_path / "log"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_CHILD, str(path), str(go), str(log),
                               str(r)], stdout=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start at once
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o[0] for o in outs) == ["False", "True"]  # exactly one built
    assert log.read_text() == "built\n"
    waited = next(float(o[1]) for o in outs if o[0] == "False")
    assert waited >= 1.0  # the other one waited for the build rather than skipping the lock
    assert np.load(path).shape == (2, 162, 3)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers


def test_killed_build_leaves_no_cache_and_the_next_builds_it(tmp_path):
    path = tmp_path / "x.npy"

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        tc.ensure(path, crash, log=lambda m: None)
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))
    assert tc.ensure(path, lambda tmp: np.save(tmp.open("wb"), np.ones(3)), log=lambda m: None)
    assert not tc.ensure(path, lambda tmp: pytest.fail("built twice"), log=lambda m: None)


class FeatureMethod(Method):
    """Stands for a feature-based method: it needs more of the teacher than its logits."""

    name = "features"
    teacher_logits_only = False


def choose(setting="auto", method=None, loader="device", epochs=240, exists=False):
    return tc.choose(setting, has_teacher=True, method=method or methods.get("kd"),
                     loader_kind=loader, epochs=epochs, padding=4, exists=lambda: exists)


def test_cache_is_used_only_when_exact_and_auto_only_when_it_pays():
    assert choose().use_cache and choose("on", epochs=2).use_cache
    assert choose("auto", epochs=2, exists=True).use_cache  # built already: free to use
    assert "162 views" in choose("auto", epochs=2).note  # building it would not pay off
    assert "off" in choose("off").note and not choose("off").use_cache
    assert "loader torch" in choose("on", loader="torch").note
    assert "needs more" in choose("on", method=FeatureMethod).note
    composed = make_composite("kd+features", methods.get("kd"), None, FeatureMethod)
    assert not choose("on", method=composed).use_cache
    assert choose("on", method=methods.get("dkd+ls+rkkd")).use_cache
    # every method but the two-view ones (mlkd: the cache holds no strong views)
    two_view = {m for m in methods.available() if len(methods.get(m).views) > 1}
    assert two_view and all(m.startswith("mlkd") for m in two_view)
    assert all(methods.get(m).teacher_logits_only != (m in two_view) for m in methods.available())
    assert not choose("on", method=methods.get("mlkd")).use_cache
    assert not tc.choose("on", has_teacher=False, method=methods.get("vanilla"),
                         loader_kind="device", epochs=240, padding=4,
                         exists=lambda: True).use_cache


def job(tmp_path: Path, teacher: Path, **recipe) -> dict:
    return {"kind": "student", "dataset": DATASET, "student": "resnet8", "seed": 0,
            "teacher": {"name": "t", "arch": "resnet8", "checkpoint": str(teacher)},
            "method": {"name": "kd", "params": {"T": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}},
            "recipe": {"epochs": 2, "batch_size": 8, "lr": 0.05, "lr_milestones": [1],
                       "eval_batch_size": 16, **recipe}}


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "teacher.pt"
    checkpoints.atomic_save({"model": models.create("resnet8", num_classes=4).state_dict()}, path)
    return path


def test_job_trained_with_the_cache_matches_one_without(tmp_path, teacher_file):
    rows: dict[str, list] = {"live": [], "cache": []}
    results = {}
    for kind, setting in (("live", "off"), ("cache", "on")):
        run = Run(job(tmp_path, teacher_file, loader="device", teacher_cache=setting),
                  tmp_path / "runs" / kind, tmp_path)
        hooks = Hooks(epoch_done=lambda row, progress, k=kind: rows[k].append(row))
        results[kind] = train(run, hooks)
    assert results["live"]["switches"]["teacher"] == "live"
    assert results["cache"]["switches"]["teacher"] == "cache"
    assert results["cache"]["switches"]["teacher_note"].endswith("-crop4flip-fp32.npy (host)")
    assert len(list((tmp_path / "runs" / "teacher_cache").glob("*.npy"))) == 1
    for a, b in zip(rows["live"], rows["cache"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["components"]["kd"] == pytest.approx(b["components"]["kd"], rel=1e-4)
        assert (a["test_top1"], a["train_top1"]) == (b["test_top1"], b["train_top1"])
    for k in ("best_top1", "last_top1", "teacher_top1", "agree_top1"):
        assert results["live"][k] == results["cache"][k]
    assert results["live"]["kl"] == pytest.approx(results["cache"]["kl"], rel=1e-4)


def test_falls_back_to_the_live_teacher_when_views_are_unknown(tmp_path, teacher_file):
    run = Run(job(tmp_path, teacher_file, epochs=1, lr_milestones=[1], loader="torch",
                  teacher_cache="on"), tmp_path / "runs" / "j", tmp_path)
    sw = train(run)["switches"]
    assert (sw["loader"], sw["teacher"]) == ("torch", "live")
    assert "sampled views are not known" in sw["teacher_note"]
    assert not (tmp_path / "runs" / "teacher_cache").exists()


def test_teacher_cache_command_builds_what_jobs_then_use(tmp_path):
    base = ["--db", f"sqlite:///{tmp_path / 'k.db'}", "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path)]

    def kdrun(*args: str):
        return CliRunner().invoke(app, [*base, *args])

    ckpt20 = save_kdrun_checkpoint(tmp_path / "t20.pt", "resnet8", num_classes=20)
    assert kdrun("teacher", "import", str(ckpt20), "--dataset", "synthetic", "--name", "t",
                 "--no-eval").exit_code == 0
    opts = ["-o", "train_size=12", "-o", "test_size=8", "--device", "cpu"]
    r = kdrun("teacher", "cache", "t", *opts)
    assert r.exit_code == 0, r.output
    assert "built in" in r.output and "12 images x 162 views, fp32" in r.output
    assert "already built" in kdrun("teacher", "cache", "t", *opts).output
    assert "expected KEY=VALUE" in kdrun("teacher", "cache", "t", "-o", "x").output
    assert kdrun("teacher", "cache", "nobody").exit_code == 2

    # A short job (auto would not build) finds the command's cache under the same key.
    cfg = job(tmp_path, ckpt20, loader="device")
    cfg["dataset"] = {"name": "synthetic", "num_classes": 20, "train_size": 12, "test_size": 8}
    cfg["teacher"]["sha256"] = checkpoints.sha256(ckpt20)
    sw = train(Run(cfg, tmp_path / "runs" / "job", tmp_path))["switches"]
    assert sw["teacher"] == "cache", sw
    assert len(list((tmp_path / "runs" / "teacher_cache").glob("*.npy"))) == 1
