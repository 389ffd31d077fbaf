"""In-memory uint8 image sets with the CIFAR training pipeline (crop + flip + normalize)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from kdrun.lazy import lazy

# torchvision (its import pulls in torch._dynamo, ~1 s) loads when a transform is built.
T = lazy("torchvision.transforms.v2")

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel


def cifar_transform(train: bool, mean=CIFAR100_MEAN, std=CIFAR100_STD) -> T.Compose:
    """RandomCrop(32, padding=4) + horizontal flip for training; normalization for both."""
    steps: list = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if train:
        steps = [T.ToImage(), T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + steps[1:]
    return T.Compose([*steps, T.Normalize(mean, std)])


class CifarPipeline:
    """`cifar_transform`, built at its first image: a job whose batches the device-resident
    loader makes on the GPU never calls it, and so never imports torchvision."""

    def __init__(self, train: bool, mean=CIFAR100_MEAN, std=CIFAR100_STD) -> None:
        self.args = (train, mean, std)
        self.built = None

    def pipeline(self) -> T.Compose:
        if self.built is None:
            self.built = cifar_transform(*self.args)
        return self.built

    @property
    def transforms(self) -> list:
        """The steps, as torchvision's Compose lists them."""
        return self.pipeline().transforms

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.pipeline()(img)


class ArrayImages(Dataset):
    """Images as a uint8 NHWC array (CIFAR's own layout) plus integer labels.

    `stats` names the normalization when `transform` is the CIFAR pipeline; only then can the
    device-resident loader (kdrun.data.device_loader) reproduce the pipeline on the GPU.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform=None,
                 stats: Stats | None = None) -> None:
        assert data.dtype == np.uint8 and data.ndim == 4 and data.shape[-1] == 3
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.stats = stats

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.data[i]).permute(2, 0, 1)  # CHW uint8 tensor
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


def cifar_images(data: np.ndarray, targets: np.ndarray, train: bool,
                 mean=CIFAR100_MEAN, std=CIFAR100_STD) -> ArrayImages:
    """An ArrayImages with the CIFAR pipeline, usable by both the torchvision and device loaders."""
    return ArrayImages(data, targets, CifarPipeline(train, mean, std),
                       stats=(tuple(mean), tuple(std)))
