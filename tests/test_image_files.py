"""Datasets of image files: Tiny-ImageNet on a format-faithful fixture tree (through the
worker), the CIFAR zoo at 64x64, loader workers sized from the CPUs, pinned memory,
persistent workers that resume exactly, and the GPU-decode path's seeded transforms (on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from sqlalchemy import select

from kdrun import data, loader_workers, models
from kdrun.data.gpu_decode import gpu_loaders
from kdrun.data.loaders import make_loaders, worker_args
from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.errors import UserError
from kdrun.params import as_dict, build
from kdrun.recipe import Recipe
from kdrun.train.trainer import Hooks, Interrupted, Run, train
from kdrun.worker.child import loader_workers as child_workers
from kdrun.worker.loop import WorkerOptions, make_slots
from tests.fixtures_data import write_tiny_imagenet
from tests.helpers import cli, write_grid

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"name": "tiny_imagenet", "num_classes": 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_tiny_imagenet(d)
    return d


def test_tiny_imagenet_reads_the_archive_layout(tiny_dir):
    s = data.load(data.resolve(TINY), tiny_dir)
    assert (len(s.train), len(s.test), s.num_classes, s.image_size) == (12, 6, 3, 64)
    root = tiny_dir / "tiny-imagenet-200"
    wnids = sorted((root / "wnids.txt").read_text().split())
    ann = [line.split("\t") for line in (root / "val/val_annotations.txt").read_text()
           .splitlines()]
    # validation labels from val_annotations.txt, in its order, files where the archive has them
    assert [(p.name, y) for p, y in s.test.samples] == [(f, wnids.index(w)) for f, w, *_ in ann]
    assert all(p.parent == root / "val" / "images" for p, _ in s.test.samples)
    assert [y for _, y in s.train.samples] == [0] * 4 + [1] * 4 + [2] * 4  # sorted wnids
    x, y = s.train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    rrc = data.load(data.resolve({**TINY, "augment": "rrc"}), tiny_dir)
    assert rrc.train[0][0].shape == (3, 64, 64)
    with pytest.raises(UserError, match="dataset.augment"):
        data.resolve({**TINY, "augment": "mixup"})


def test_tiny_imagenet_offline_error_names_the_layout(tmp_path, tiny_dir):
    with pytest.raises(UserError) as e:
        data.load(data.resolve(TINY), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "tiny-imagenet-200/wnids.txt is missing" in msg
    assert ("tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
            "val/val_annotations.txt}") in msg and "download: true" in msg
    with pytest.raises(UserError, match="wnids.txt lists 3 classes but dataset.num_classes is "
                                        "200"):
        data.load(data.resolve("tiny_imagenet"), tiny_dir)


def test_cifar_zoo_runs_at_64x64_and_is_unchanged_at_32x32():
    with torch.device("meta"):  # each CIFAR family whose pool changed, and MobileNetV1's
        for arch in ("resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2",
                     "ResNet18", "MobileNetV1"):
            m = models.create(arch, num_classes=200, dataset="tiny_imagenet")
            assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 200), arch
    torch.manual_seed(0)
    m = models.create("resnet8", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = m.forward_features(x)
        fixed = torch.nn.functional.avg_pool2d(f["stages"][-1], 8).flatten(1)
    assert torch.equal(f["pooled"], fixed)  # the global pool is the old 8x8 pool at 32x32
    # names both zoos have are the CIFAR nets (3x3 stem) at 64x64; the others come from ImageNet
    assert models.create("ResNet18", dataset="tiny_imagenet").conv1.kernel_size == (3, 3)
    assert models.create("ResNet34", dataset="tiny_imagenet").conv1.kernel_size == (7, 7)


def test_tiny_imagenet_trains_through_the_worker(tmp_path, tiny_dir):
    g = write_grid(tmp_path / "g.yaml", {
        "name": "tiny", "dataset": TINY,
        "recipe": {"epochs": 1, "batch_size": 6, "lr": 0.05, "lr_milestones": [1],
                   "eval_batch_size": 6},
        "teachers": {"resnet8": {"train": True}},
        "pairs": [{"teacher": "resnet8", "student": "resnet8"}], "methods": ["kd"]})
    assert cli(tmp_path, "--data-dir", str(tiny_dir), "enqueue", "--grid", str(g)).exit_code == 0
    r = cli(tmp_path, "--data-dir", str(tiny_dir), "worker", "--cpu", "--max-jobs", "1")
    assert r.exit_code == 0, r.output
    with Database(f"sqlite:///{tmp_path / 'kdrun.db'}").read() as s:
        job, res = s.execute(select(Job, Result).join(Result, Result.job_id == Job.id)).one()
    assert (job.kind, job.state, job.dataset) == ("teacher", "succeeded", "tiny_imagenet")
    assert 0 <= res.best_top1 <= 100 and res.switches["decode"] == "cpu"


def test_loader_workers_default_to_the_cpus_available(monkeypatch):
    monkeypatch.setattr(loader_workers.os, "sched_getaffinity", lambda pid: set(range(8)),
                        raising=False)
    assert loader_workers.available_cpus() == 8
    assert loader_workers.default_workers("imagenet") == 7  # one CPU left for training
    assert loader_workers.default_workers("cifar100") == 0  # in memory: no workers
    slots = make_slots(WorkerOptions(Path("r"), Path("d"), devices=["cuda:0", "cuda:1"]))
    assert [s.threads for s in slots] == [4, 4]  # two jobs at once share the 8 CPUs
    cfg = {"dataset": {"name": "tiny_imagenet"}}
    assert child_workers(None, cfg, slots[0].threads) == 3
    assert child_workers(None, cfg, None) == 7 and child_workers(0, cfg, 4) == 0  # --loader-w.


def test_pinned_memory_prefetch_and_persistent_workers(tiny_dir):
    s = data.load(data.resolve(TINY), tiny_dir)
    for dev, pin in ((torch.device("cuda"), True), (torch.device("cpu"), False)):
        ld = make_loaders(s, "auto", dev, torch.Generator(), batch_size=4, eval_batch_size=4,
                          num_workers=2)
        for loader in (ld.train, ld.test):
            assert (loader.pin_memory, loader.persistent_workers, loader.num_workers,
                    loader.prefetch_factor) == (pin, True, 2, 4)
    assert worker_args(0, torch.device("cuda"))["persistent_workers"] is False


def _config(**recipe) -> dict:
    r = {"epochs": 2, "batch_size": 4, "lr": 0.05, "lr_milestones": [1], "eval_batch_size": 6,
         **recipe}
    return {"kind": "teacher", "dataset": data.resolve(TINY), "student": "resnet8",
            "recipe": as_dict(build(Recipe, r, "recipe")), "teacher": None,
            "method": {"name": "vanilla", "params": {}}, "seed": 0}


def test_persistent_workers_resume_exactly_and_match_no_workers(tmp_path, tiny_dir):
    cfg = _config()
    straight = train(Run(cfg, tmp_path / "a", tiny_dir, num_workers=2))
    with pytest.raises(Interrupted):
        train(Run(cfg, tmp_path / "b", tiny_dir, num_workers=2),
              Hooks(stop_requested=lambda: True))
    resumed = train(Run(cfg, tmp_path / "b", tiny_dir, num_workers=2))
    alone = train(Run(cfg, tmp_path / "c", tiny_dir, num_workers=0))
    a, b, c = (torch.load(o["checkpoint"], weights_only=True)["model"]
               for o in (straight, resumed, alone))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed with persistent workers
    assert all(torch.equal(a[k], c[k]) for k in a)  # the stream does not depend on workers


def test_gpu_decode_path_draws_the_cpu_pipelines_crops_and_flips(tiny_dir):
    """The decode-on-device path (run here on the CPU) gives each image the transform of its
    seed, as the PIL pipeline does: same views, pixels equal up to decoder rounding."""
    s = data.load(data.resolve(TINY), tiny_dir)
    cpu = make_loaders(s, "torch", torch.device("cpu"), torch.Generator().manual_seed(3),
                       batch_size=12, eval_batch_size=6)
    dev, _, _ = gpu_loaders(s, torch.device("cpu"), torch.Generator().manual_seed(3), 12, 6,
                            worker_args(0, torch.device("cpu")))
    (x1, y1), (x2, y2) = next(iter(cpu.train)), next(iter(dev))
    assert torch.equal(y1, y2) and x1.shape == x2.shape == (12, 3, 64, 64)
    assert (x1 - x2).abs().mean() < 0.05  # same crops and flips (a shifted crop: ~0.5)
    assert (x1 - x2.flip(-1)).abs().mean() > 0.1


def test_switches_accept_yaml_on_and_off():
    r = build(Recipe, yaml.safe_load("{gpu_decode: on, channels_last: off}"), "recipe")
    assert (r.gpu_decode, r.channels_last) == ("on", "off")  # YAML 1.1 read them as booleans
    with pytest.raises(UserError, match="recipe.gpu_decode: 'maybe' is not one of"):
        build(Recipe, {"gpu_decode": "maybe"}, "recipe")
