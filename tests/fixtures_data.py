"""Tiny, format-faithful dataset and checkpoint fixtures for the data and teacher tests.

`write_cifar100` writes `cifar-100-python/{train,test,meta}` as the original files are: Python 2
protocol-2 pickles (byte-string keys and data, numpy 1.x array globals), emitted opcode by
opcode, so the real loader meets the same bytes it meets in the published archive.
`write_imagefolder` writes an ImageFolder tree of PNGs.
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdrun import checkpoints, models


def _str(b: bytes) -> bytes:  # a Python 2 `str`
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _ndarray(a: np.ndarray) -> bytes:
    """What numpy 1.x under Python 2 writes for a C-contiguous uint8 array."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    dtype = (b"cnumpy\ndtype\n" + _str(b"u1") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _int(0) + b"\x85"
            + _str(b"b") + b"\x87R" + b"(" + _int(1) + shape + dtype + b"\x89"
            + _str(a.tobytes()) + b"tb")


def _value(v) -> bytes:
    if isinstance(v, np.ndarray):
        return _ndarray(v)
    if isinstance(v, bytes):
        return _str(v)
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_value(x) for x in v) + b"e"
    raise TypeError(type(v))


def py2_pickle(d: dict[bytes, object]) -> bytes:
    return b"\x80\x02}(" + b"".join(_str(k) + _value(v) for k, v in d.items()) + b"u."


def cifar_like_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 N x 3072 rows (channel-major, as CIFAR stores them) with a per-class color, so a
    few epochs learn something."""
    rng = np.random.default_rng(seed)
    base = (np.arange(100)[:, None] * np.array([37, 91, 53]) % 256).astype(np.float64)
    img = base[labels][:, :, None] + rng.normal(0, 40, (len(labels), 3, 1024))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_cifar100(data_dir: Path, train_per_class: int = 3, test_per_class: int = 1) -> Path:
    """data_dir/cifar-100-python/{train,test,meta}; returns that folder."""
    root = data_dir / "cifar-100-python"
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        fine = np.tile(np.arange(100), per_class)
        np.random.default_rng(seed).shuffle(fine)
        d = {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
             b"batch_label": f"{split} batch".encode(),
             b"fine_labels": [int(x) for x in fine],
             b"coarse_labels": [int(x) // 5 for x in fine],
             b"data": cifar_like_images(fine, seed)}
        (root / split).write_bytes(py2_pickle(d))
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    (root / "meta").write_bytes(py2_pickle(meta))
    return root


def write_imagefolder(root: Path, classes: int = 3, train_per_class: int = 4,
                      val_per_class: int = 2, size: tuple[int, int] = (40, 52)) -> Path:
    """root/{train,val}/<class>/<n>.png with varied sizes; returns root."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = size[0] + 4 * i, size[1] - 2 * i
                px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 2 + 40 * c
                Image.fromarray(px.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def save_kdrun_checkpoint(path: Path, arch: str, num_classes: int = 100, seed: int = 0,
                          layout: str = "model") -> Path:
    """A checkpoint as kdrun saves one ({"model": sd}), or as "raw" / "state_dict" /
    "module" (DataParallel prefix inside {"state_dict": ...})."""
    torch.manual_seed(seed)
    sd = models.create(arch, num_classes=num_classes).state_dict()
    obj = {"model": sd, "raw": sd, "state_dict": {"state_dict": sd},
           "module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}}[layout]
    checkpoints.atomic_save(obj, path)
    return path


def cifar_teachers_tar(path: Path, files: dict[str, Path]) -> Path:
    """A .tar with `cifar_teachers/<folder>/ckpt_epoch_240.pth` per {folder: checkpoint}."""
    with tarfile.open(path, "w") as tar:
        for folder, ckpt in files.items():
            data = ckpt.read_bytes()
            info = tarfile.TarInfo(f"cifar_teachers/{folder}/ckpt_epoch_240.pth")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_tiny_imagenet(data_dir: Path, classes: int = 3, train_per_class: int = 4,
                        val_per_class: int = 2) -> Path:
    """data_dir/tiny-imagenet-200 as the archive unpacks: wnids.txt (not sorted), words.txt,
    train/<wnid>/images/<wnid>_<i>.JPEG with <wnid>_boxes.txt, val/images/val_<i>.JPEG (all
    classes in one folder, interleaved) labelled by val/val_annotations.txt (tab-separated file,
    wnid, box), test/images. Real 64x64 JPEG files with a per-class colour."""
    root = data_dir / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = [f"n0{7000000 - 1111 * c:07d}" for c in range(classes)]  # descending: unsorted

    def jpeg(path: Path, c: int) -> None:
        base = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256])
        px = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(path, format="JPEG", quality=90)

    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        folder = root / "train" / w
        for i in range(train_per_class):
            jpeg(folder / "images" / f"{w}_{i}.JPEG", c)
        (folder / f"{w}_boxes.txt").write_text(
            "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(train_per_class)))
    lines = []
    for i in range(classes * val_per_class):
        c = (i * 2 + 1) % classes  # interleaved, not grouped by class
        jpeg(root / "val" / "images" / f"val_{i}.JPEG", c)
        lines.append(f"val_{i}.JPEG\t{wnids[c]}\t{i % 7}\t{i % 5}\t{40 + i % 9}\t{50 + i % 3}\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    jpeg(root / "test" / "images" / "test_0.JPEG", 0)
    return root
