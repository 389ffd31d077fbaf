"""ImageNet (or any subset of it) from an ImageFolder tree: ROOT/{train,val}/<class>/<image>.

Training: RandomResizedCrop(224) + horizontal flip; evaluation: Resize(256) + CenterCrop(224);
both normalized with the ImageNet mean/std -- the torchvision reference recipe the published
ImageNet KD results use. The `val` folder is the test split (as in the papers); it must be
sorted into class folders like `train` (e.g. with the usual valprep.sh).
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdrun.data.catalog import ImageNetParams
from kdrun.data.registry import Splits, register
from kdrun.errors import UserError
from kdrun.lazy import lazy

# torchvision (its import pulls in torch._dynamo, ~1 s) loads when a transform is built.
T = lazy("torchvision.transforms.v2")
datasets = lazy("torchvision.datasets")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transform(train: bool, size: int = 224, resize: int = 256) -> T.Compose:
    head = ([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()] if train
            else [T.Resize(resize, antialias=True), T.CenterCrop(size)])
    return T.Compose([*head, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _folder(path: Path, train: bool, p: ImageNetParams) -> datasets.ImageFolder:
    try:
        return datasets.ImageFolder(str(path),
                                    transform=imagenet_transform(train, p.image_size, p.resize))
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"ImageNet folder {path}: {str(e).strip().splitlines()[0]}") from None


@register("imagenet", ImageNetParams)
def build(p: ImageNetParams, data_dir: Path) -> Splits:
    root = Path(p.root) if Path(p.root).is_absolute() else data_dir / p.root
    missing = [d for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise UserError(
            f"ImageNet not found ({root / missing[0]} is missing): put an ImageFolder tree "
            f"{p.root}/{{train,val}}/<class>/<image> under {data_dir.resolve()} "
            "(--data-dir / KDRUN_DATA) or set dataset.root; val must be sorted into class folders"
        )
    train, test = _folder(root / "train", True, p), _folder(root / "val", False, p)
    if train.classes != test.classes:
        extra = sorted(set(train.classes) ^ set(test.classes))
        raise UserError(f"ImageNet at {root}: train and val have different class folders "
                        f"({len(train.classes)} vs {len(test.classes)}, e.g. {extra[0]!r})")
    if len(train.classes) != p.num_classes:
        raise UserError(f"ImageNet at {root}: {len(train.classes)} class folders but "
                        f"dataset.num_classes is {p.num_classes}; set num_classes for a subset")
    return Splits(train=train, test=test, val=None, num_classes=p.num_classes,
                  image_size=p.image_size)
