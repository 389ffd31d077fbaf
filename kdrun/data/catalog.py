"""Each dataset's name and typed config (what a grid may set), without torch.

`kdrun enqueue` validates a grid's `dataset:` with these alone; the builders that load the
data (kdrun.data.cifar, ...) import torch and register themselves when first needed
(kdrun.data.registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CIFAR_FOLDER = "cifar-100-python"
CIFAR_FILES = ("train", "test", "meta")
TINY_FOLDER = "tiny-imagenet-200"
TINY_LAYOUT = (f"{TINY_FOLDER}/{{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
               "val/val_annotations.txt}")


@dataclass
class Cifar100Params:
    download: bool = False  # fetch the archive into the data directory when it is missing
    val_split: int = 0  # training images held out for model selection (e.g. 5000 -> 45k/5k)
    split_seed: int = 0  # which images are held out; independent of the training seed

    def __post_init__(self) -> None:
        if self.val_split < 0:
            raise ValueError("val_split must be >= 0")


@dataclass
class ImageNetParams:
    root: str = "imagenet"  # relative to the data directory unless absolute
    num_classes: int = 1000  # class folders expected (set it for a subset)
    image_size: int = 224  # training crop and evaluation center crop
    resize: int = 256  # evaluation resize of the shorter side before the center crop

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.image_size < 1 or self.resize < self.image_size:
            raise ValueError("num_classes >= 2, image_size >= 1 and resize >= image_size required")


@dataclass
class SyntheticParams:
    num_classes: int = 20
    classes_per_superclass: int = 5
    train_size: int = 2000
    test_size: int = 500
    noise: float = 1.0  # per-sample noise amplitude relative to the class signal; higher = harder
    seed: int = 0  # the data's own seed, independent of the training seed

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.train_size < 1 or self.test_size < 1:
            raise ValueError("num_classes >= 2, train_size >= 1 and test_size >= 1 required")
        if self.classes_per_superclass < 1:
            raise ValueError("classes_per_superclass must be >= 1")


@dataclass
class TinyImageNetParams:
    root: str = TINY_FOLDER  # relative to the data directory unless absolute
    num_classes: int = 200  # lines of wnids.txt expected (set it for a subset)
    augment: Literal["crop", "rrc"] = "crop"  # crop 64 pad 8 + flip, or RandomResizedCrop + flip
    download: bool = False  # fetch and unpack the archive when it is missing

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError("num_classes must be >= 2")


# name in a grid -> (its config, the module whose builder loads it)
DATASETS: dict[str, tuple[type, str]] = {
    "cifar100": (Cifar100Params, "kdrun.data.cifar"),
    "imagenet": (ImageNetParams, "kdrun.data.imagenet"),
    "synthetic": (SyntheticParams, "kdrun.data.synthetic"),
    "tiny_imagenet": (TinyImageNetParams, "kdrun.data.tiny_imagenet"),
}
