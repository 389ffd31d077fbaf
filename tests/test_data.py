"""Datasets on format-faithful fixtures, the device-resident loader against torchvision's
pipeline, and training end to end on the fixture CIFAR-100 and ImageFolder (CPU)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from kdrun import data
from kdrun.data import cifar
from kdrun.data.device_loader import DeviceLoader, Views
from kdrun.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from kdrun.data.images import CIFAR100_MEAN, CIFAR100_STD, cifar_images, cifar_transform
from kdrun.data.split import stratified_split
from kdrun.errors import ConfigError, UserError
from kdrun.params import as_dict, build
from kdrun.recipe import Recipe
from kdrun.train.trainer import Hooks, Interrupted, Run, train
from tests.fixtures_data import write_cifar100, write_imagefolder

# chi-square critical value, 80 degrees of freedom (81 crop positions), p = 1e-4
CHI2_80 = 135.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_cifar100(d)
    return d


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_imagefolder(d / "imagenet")
    return d


# --- CIFAR-100 -------------------------------------------------------------------------------

def test_cifar100_reader_matches_torchvision(cifar_dir, monkeypatch):
    """Our restricted reader returns exactly what torchvision's CIFAR100 reads from the files
    (its md5 check is for the real archive, so it is bypassed here)."""
    import torchvision.datasets.cifar as tvc

    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        tv = tvc.CIFAR100(str(cifar_dir), train=split == "train")
        x, y = cifar.read_split(cifar_dir / cifar.FOLDER, split)
        assert x.shape == tv.data.shape and np.array_equal(x, tv.data)
        assert np.array_equal(y, np.asarray(tv.targets))
    assert tv.classes[:2] == ["class0", "class1"]


def test_cifar100_splits_and_pipeline(cifar_dir):
    s = data.load(data.resolve("cifar100"), cifar_dir)
    assert (len(s.train), len(s.test), s.val) == (300, 100, None)
    assert (s.num_classes, s.image_size) == (100, 32)
    x, y = s.test[3]
    raw = torch.from_numpy(s.test.data[3]).permute(2, 0, 1)
    ref = F.normalize(F.to_dtype(raw, torch.float32, scale=True), CIFAR100_MEAN, CIFAR100_STD)
    assert torch.equal(x, ref) and y == int(s.test.targets[3])
    steps = [type(t).__name__ for t in s.train.transform.transforms]
    assert steps == ["ToImage", "RandomCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    crop = s.train.transform.transforms[1]
    assert crop.size == (32, 32) and crop.padding == [4, 4, 4, 4] and crop.fill == 0
    norm = s.train.transform.transforms[-1]
    assert tuple(norm.mean) == (0.5071, 0.4867, 0.4408)
    assert tuple(norm.std) == (0.2675, 0.2565, 0.2761)


def test_cifar100_missing_says_which_file_where(tmp_path):
    with pytest.raises(UserError) as e:
        data.load(data.resolve("cifar100"), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "cifar-100-python/train is missing" in msg
    assert "cifar-100-python/{train,test,meta}" in msg and str(tmp_path.resolve()) in msg
    assert "download: true" in msg and "--download" in msg


def test_cifar100_downloads_only_when_allowed(tmp_path, monkeypatch):
    calls = []

    def fake_download(data_dir: Path) -> None:
        calls.append(data_dir)
        write_cifar100(data_dir, train_per_class=1, test_per_class=1)

    monkeypatch.setattr(cifar, "_download", fake_download)
    with pytest.raises(UserError):
        data.load(data.resolve("cifar100"), tmp_path / "a")
    assert calls == []
    assert len(data.load(data.resolve({"name": "cifar100", "download": True}), tmp_path / "b")
               .train) == 100
    assert len(data.load(data.resolve("cifar100"), tmp_path / "c", download=True).test) == 100
    assert calls == [tmp_path / "b", tmp_path / "c"]


def test_cifar100_refuses_a_pickle_that_runs_code(tmp_path):
    root = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "test").write_bytes(pickle.dumps({"data": Evil(), "fine_labels": [0]}))
    with pytest.raises(UserError, match=r"not a CIFAR-100 pickle \(unexpected global builtins"):
        data.load(data.resolve("cifar100"), tmp_path)


def test_validation_split_is_stratified_fixed_and_unaugmented(cifar_dir):
    s = data.load(data.resolve({"name": "cifar100", "val_split": 200}), cifar_dir)
    assert (len(s.train), len(s.val)) == (100, 200)
    assert np.bincount(s.val.targets, minlength=100).tolist() == [2] * 100
    assert s.val.transform.transforms[1].__class__.__name__ == "ToDtype"  # no crop or flip
    full = data.load(data.resolve("cifar100"), cifar_dir).train.data.reshape(300, -1)
    both = np.concatenate([s.train.data, s.val.data]).reshape(300, -1)
    rows = {r.tobytes() for r in full}
    assert len(rows) == 300 and {r.tobytes() for r in both} == rows  # a partition
    again = data.load(data.resolve({"name": "cifar100", "val_split": 200}), cifar_dir)
    assert np.array_equal(again.val.data, s.val.data)
    other = data.load(data.resolve({"name": "cifar100", "val_split": 200, "split_seed": 1}),
                      cifar_dir)
    assert not np.array_equal(other.val.data, s.val.data)
    labels = np.repeat(np.arange(7), 13)
    tr, va = stratified_split(labels, 30, seed=3)
    counts = np.bincount(labels[va], minlength=7)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 1
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(labels)))
    with pytest.raises(UserError, match="val_split"):
        data.load(data.resolve({"name": "cifar100", "val_split": 300}), cifar_dir)


# --- ImageNet (ImageFolder) ------------------------------------------------------------------

def test_imagenet_imagefolder_pipelines(imagenet_dir):
    s = data.load(data.resolve({"name": "imagenet", "num_classes": 3}), imagenet_dir)
    assert (len(s.train), len(s.test), s.num_classes, s.image_size) == (12, 6, 3, 224)
    x, y = s.train[5]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1
    names = [type(t).__name__ for t in s.train.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToImage", "ToDtype",
                     "Normalize"]
    img, _ = s.test[0]
    pil = s.test.loader(s.test.samples[0][0])
    ref = F.normalize(F.to_dtype(F.center_crop(F.resize(F.to_image(pil), 256), 224),
                                 torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(img, ref)


def test_imagenet_errors_are_one_line(imagenet_dir, tmp_path):
    with pytest.raises(UserError, match=r"ImageNet not found .*imagenet/train is missing"):
        data.load(data.resolve("imagenet"), tmp_path)
    with pytest.raises(UserError, match="3 class folders but dataset.num_classes is 1000"):
        data.load(data.resolve("imagenet"), imagenet_dir)
    odd = write_imagefolder(tmp_path / "odd", classes=2)
    (odd / "val" / "n00000001").rename(odd / "val" / "n99999999")
    with pytest.raises(UserError, match="train and val have different class folders"):
        data.load(data.resolve({"name": "imagenet", "root": str(odd), "num_classes": 2}), tmp_path)


# --- the device-resident loader --------------------------------------------------------------

def _coordinate_image() -> np.ndarray:
    """One 32x32 image whose pixels name their own row (R) and column (G); B marks 'inside'."""
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([r * 8, c * 8, np.full_like(r, 255)], -1).astype(np.uint8)[None]


def _decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flip) of normalized crops of the coordinate image."""
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    u8 = ((x * std + mean) * 255).round().long()
    assert (u8[:, 2, 12:20, 12:20] == 255).all()  # the center is always inside the image
    src_r, src_c = u8[:, 0, 16, 16] // 8, u8[:, 1, 16, 16] // 8
    flip = u8[:, 1, 16, 17] < u8[:, 1, 16, 16]
    return src_r - 12, torch.where(flip, src_c - 11, src_c - 12), flip


def test_render_is_bit_identical_to_torchvision_for_every_view():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    loader = DeviceLoader(imgs, np.zeros(2), 8, CIFAR100_MEAN, CIFAR100_STD, train=False)
    grid = torch.cartesian_prod(torch.arange(2), torch.arange(9), torch.arange(9), torch.arange(2))
    out = loader.render(Views(grid[:, 0], grid[:, 1], grid[:, 2], grid[:, 3].bool()))
    for k, (i, dy, dx, fl) in enumerate(grid.tolist()):
        crop = F.pad(torch.from_numpy(imgs[i]).permute(2, 0, 1), [4])[:, dy:dy + 32, dx:dx + 32]
        crop = F.horizontal_flip(crop) if fl else crop
        ref = F.normalize(F.to_dtype(crop, torch.float32, scale=True), CIFAR100_MEAN, CIFAR100_STD)
        assert torch.equal(out[k], ref), (i, dy, dx, fl)


def test_augmentation_distribution_matches_torchvision():
    """Crop offsets uniform over the 81 positions and flips at rate 1/2, for both pipelines;
    decoded from the images themselves, so the reported view ids are checked too."""
    n = 81 * 100
    img = _coordinate_image()
    g = torch.Generator().manual_seed(0)
    loader = DeviceLoader(np.repeat(img, n, 0), np.zeros(n), 1024, CIFAR100_MEAN, CIFAR100_STD,
                          generator=g)
    ours = [(x, v) for x, _, v in loader.batches(with_views=True)]
    dy, dx, flip = _decode(torch.cat([x for x, _ in ours]))
    views = Views(*(torch.cat([getattr(v, f) for _, v in ours])
                    for f in ("index", "dy", "dx", "flip")))
    assert torch.equal(dy, views.dy) and torch.equal(dx, views.dx)
    assert torch.equal(flip, views.flip) and sorted(views.index.tolist()) == list(range(n))

    torch.manual_seed(0)
    tf = cifar_transform(train=True)
    base = torch.from_numpy(img[0]).permute(2, 0, 1)
    tdy, tdx, tflip = _decode(torch.stack([tf(base) for _ in range(n)]))

    for a, b, f in ((dy, dx, flip), (tdy, tdx, tflip)):
        assert a.min() == 0 and a.max() == 8 and b.min() == 0 and b.max() == 8
        counts = torch.bincount(a * 9 + b, minlength=81).double()
        chi2 = ((counts - n / 81) ** 2 / (n / 81)).sum().item()
        assert chi2 < CHI2_80, chi2
        assert abs(f.double().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5


def test_device_loader_epochs_cover_the_data_deterministically_and_resume():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    ds = cifar_images(imgs, np.arange(50) % 7, train=True)

    def epochs(loader, k):
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(k)]

    a = DeviceLoader.from_dataset(ds, 16, generator=torch.Generator().manual_seed(5))
    assert len(a) == 4
    first, second = epochs(a, 2)
    assert [len(y) for _, y in first] == [16, 16, 16, 2]
    ys = torch.cat([y for _, y in first])
    assert sorted(ys.tolist()) == sorted((np.arange(50) % 7).tolist())

    b = DeviceLoader.from_dataset(ds, 16, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(first, epochs(b, 1)[0], strict=True))
    state = b.state_dict()
    c = DeviceLoader.from_dataset(ds, 16, generator=torch.Generator().manual_seed(99))
    c.load_state_dict(state)
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(second, epochs(c, 1)[0], strict=True))

    test = cifar_images(imgs, np.arange(50) % 7, train=False)
    ev = DeviceLoader.from_dataset(test, 32, train=False)
    assert torch.equal(torch.cat([x for x, _ in ev]), torch.stack([test[i][0] for i in range(50)]))


def test_loader_switch():
    s = data.load(data.resolve({"name": "synthetic", "train_size": 8, "test_size": 4}), Path("."))
    g = torch.Generator()
    cpu = torch.device("cpu")
    kw = dict(batch_size=4, eval_batch_size=4)
    assert data.make_loaders(s, "auto", cpu, g, **kw).kind == "torch"
    dev = data.make_loaders(s, "device", cpu, g, **kw)
    assert dev.kind == "device" and isinstance(dev.test, DeviceLoader)
    s.train.stats = None  # a pipeline the device loader does not reproduce
    with pytest.raises(ConfigError, match="loader: device needs"):
        data.make_loaders(s, "device", cpu, g, **kw)


# --- training end to end on the fixtures -----------------------------------------------------

def _config(dataset: dict, student: str, **recipe) -> dict:
    r = {"epochs": 1, "batch_size": 64, "lr": 0.05, "lr_milestones": [1], "eval_batch_size": 128,
         **recipe}
    return {"kind": "teacher", "dataset": data.resolve(dataset), "student": student,
            "recipe": as_dict(build(Recipe, r, "recipe")), "teacher": None,
            "method": {"name": "vanilla", "params": {}}, "seed": 0}


@pytest.mark.parametrize("loader", ["torch", "device"])
def test_trains_on_fixture_cifar100_selecting_on_val(cifar_dir, tmp_path, loader):
    cfg = _config({"name": "cifar100", "val_split": 100}, "resnet8", loader=loader)
    out = train(Run(cfg, tmp_path / "run", cifar_dir))
    assert out["selection_split"] == "val" and out["best_epoch"] == 1
    assert 0 <= out["best_top1"] <= 100 and Path(out["checkpoint"]).is_file()


def test_trains_on_fixture_imagefolder(imagenet_dir, tmp_path):
    cfg = _config({"name": "imagenet", "num_classes": 3, "image_size": 64, "resize": 73},
                  "ResNet18", batch_size=6, eval_batch_size=6)
    out = train(Run(cfg, tmp_path / "run", imagenet_dir))
    assert out["selection_split"] == "test" and 0 <= out["best_top1"] <= 100


def test_device_loader_resume_is_bit_exact(tmp_path):
    cfg = _config({"name": "synthetic", "num_classes": 4, "train_size": 64, "test_size": 16},
                  "resnet8", epochs=2, batch_size=16, loader="device")
    straight = train(Run(cfg, tmp_path / "a", Path(".")))
    with pytest.raises(Interrupted):
        train(Run(cfg, tmp_path / "b", Path(".")), Hooks(stop_requested=lambda: True))
    resumed = train(Run(cfg, tmp_path / "b", Path(".")))
    a = torch.load(straight["checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataloader_workers_resume_is_bit_exact(tmp_path):
    """With worker processes the torch loader seeds them from the job's generator each
    epoch, so a resumed job draws the shuffles and crops the uninterrupted one drew."""
    cfg = _config({"name": "synthetic", "num_classes": 4, "train_size": 64, "test_size": 16},
                  "resnet8", epochs=2, batch_size=16, loader="torch")
    straight = train(Run(cfg, tmp_path / "a", Path("."), num_workers=1))
    with pytest.raises(Interrupted):
        train(Run(cfg, tmp_path / "b", Path("."), num_workers=1),
              Hooks(stop_requested=lambda: True))
    resumed = train(Run(cfg, tmp_path / "b", Path("."), num_workers=1))
    a = torch.load(straight["checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
