"""Tiny-ImageNet (Stanford CS231n): 200 ImageNet classes at 64x64, as the archive unpacks.

    tiny-imagenet-200/wnids.txt                       the 200 class ids (WordNet), one a line
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      500 training images per class
    tiny-imagenet-200/val/images/*.JPEG               10,000 validation images, one folder
    tiny-imagenet-200/val/val_annotations.txt         <file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>

Classes are numbered in sorted wnid order (what an ImageFolder over `train` gives, as the KD
codebases use). Validation labels are read from val_annotations.txt, so the validation images
stay where the archive put them (no re-sorting into class folders); `val` is the test split,
as in the papers (the archive's `test` has no labels). Augmentation is a dataset parameter:
`crop` = RandomCrop(64, padding=8) + horizontal flip (the CIFAR recipe scaled to 64x64, the
common choice of KD papers on Tiny-ImageNet) or `rrc` = RandomResizedCrop(64) + flip.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdrun import headline
from kdrun.data.catalog import TINY_LAYOUT as LAYOUT
from kdrun.data.catalog import TinyImageNetParams
from kdrun.data.files import FileImages
from kdrun.data.registry import Splits, register
from kdrun.errors import UserError
from kdrun.lazy import lazy

# torchvision (its import pulls in torch._dynamo, ~1 s) loads when a transform is built.
T = lazy("torchvision.transforms.v2")

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)
SIZE = 64
SUFFIXES = (".jpeg", ".jpg", ".png")


def transform(train: bool, augment: str = "crop") -> T.Compose:
    head: list = []
    if train:
        crop = (T.RandomCrop(SIZE, padding=8) if augment == "crop"
                else T.RandomResizedCrop(SIZE, antialias=True))
        head = [crop, T.RandomHorizontalFlip()]
    return T.Compose([T.ToImage(), *head, T.ToDtype(torch.float32, scale=True),
                      T.Normalize(MEAN, STD)])


def _not_found(root: Path, missing: Path, data_dir: Path) -> UserError:
    return UserError(
        f"Tiny-ImageNet not found ({missing} is missing): put {LAYOUT} (unpacked from "
        f"{URL.rsplit('/', 1)[1]}, as it comes) under {data_dir.resolve()} (--data-dir / "
        "KDRUN_DATA) or set dataset.root, or allow downloading (download: true in the grid's "
        "dataset, or --download)")


def _download(data_dir: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, str(data_dir))
    except Exception as e:  # network, disk or archive failure: say what to do instead
        reason = headline.reason(e)
        raise UserError(f"downloading Tiny-ImageNet into {data_dir} failed ({reason}); put "
                        f"{LAYOUT} from {URL} there by hand") from None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def read(root: Path, data_dir: Path) -> tuple[list[str], list, list]:
    """(classes, train samples, val samples) with (path, label) samples."""
    need = [root / "wnids.txt", root / "train", root / "val" / "images",
            root / "val" / "val_annotations.txt"]
    if missing := next((p for p in need if not p.exists()), None):
        raise _not_found(root, missing, data_dir)
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    classes = sorted(set(wnids))
    index = {w: i for i, w in enumerate(classes)}
    train = []
    for w in classes:
        folder = root / "train" / w / "images"
        if not folder.is_dir():
            raise _not_found(root, folder, data_dir)
        train += [(p, index[w]) for p in _images(folder)]
    val = []
    ann = root / "val" / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{ann} line {n}: expected <file>\\t<wnid>\\t<box> with a wnid of "
                            f"wnids.txt, got {line[:80]!r}")
        path = root / "val" / "images" / fields[0]
        if not path.is_file():
            raise _not_found(root, path, data_dir)
        val.append((path, index[fields[1]]))
    return classes, train, val


@register("tiny_imagenet", TinyImageNetParams)
def build(p: TinyImageNetParams, data_dir: Path) -> Splits:
    root = Path(p.root) if Path(p.root).is_absolute() else data_dir / p.root
    if not root.is_dir() and p.download:
        _download(root.parent)
    classes, train, val = read(root, data_dir)
    if len(classes) != p.num_classes:
        raise UserError(f"Tiny-ImageNet at {root}: wnids.txt lists {len(classes)} classes but "
                        f"dataset.num_classes is {p.num_classes}; set num_classes for a subset")
    if not train or not val:
        raise UserError(f"Tiny-ImageNet at {root}: no {'training' if not train else 'validation'}"
                        f" images; expected {LAYOUT}")
    return Splits(train=FileImages(train, transform(True, p.augment)),
                  test=FileImages(val, transform(False)), val=None,
                  num_classes=p.num_classes, image_size=SIZE)
