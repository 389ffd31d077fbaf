"""Train/val/test batch iterables for a job: torchvision DataLoaders or the device loader.

`loader: auto` uses the device-resident loader on CUDA for datasets held as uint8 arrays
with the CIFAR pipeline (cifar100, synthetic) and DataLoaders otherwise. The two paths draw
different random streams from the same seed, so a job that must reproduce across machines
pins `loader: device` (the same stream on CPU and GPU) or `loader: torch`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kdrun.data.device_loader import DeviceLoader
from kdrun.data.images import ArrayImages
from kdrun.data.registry import Splits
from kdrun.errors import ConfigError

LOADERS = ("auto", "torch", "device")


@dataclass
class Loaders:
    train: Iterable[Any]
    test: Iterable[Any]
    val: Iterable[Any] | None
    kind: str  # "torch" or "device"


def on_device(ds: Dataset | None) -> bool:
    """Whether the device loader reproduces this dataset's pipeline."""
    return isinstance(ds, ArrayImages) and ds.stats is not None


def choose(kind: str, splits: Splits, device: torch.device) -> str:
    if kind not in LOADERS:
        raise ConfigError(f"loader {kind!r}: valid loaders are {', '.join(LOADERS)}")
    ok = on_device(splits.train)
    if kind == "device" and not ok:
        raise ConfigError("loader: device needs an in-memory 32x32 dataset with the CIFAR "
                          "pipeline (cifar100, synthetic); use loader: torch or auto")
    if kind == "auto":
        return "device" if ok and device.type == "cuda" else "torch"
    return kind


def eval_loader(ds: Dataset, batch_size: int, device: torch.device, kind: str = "torch",
                num_workers: int = 0) -> Iterable[Any]:
    """Unshuffled, unaugmented batches of an evaluation split."""
    if kind == "device" and on_device(ds):
        return DeviceLoader.from_dataset(ds, batch_size, device=device, train=False)
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def make_loaders(splits: Splits, kind: str, device: torch.device, generator: torch.Generator, *,
                 batch_size: int, eval_batch_size: int, num_workers: int = 0) -> Loaders:
    """All of a job's loaders; the training order and augmentation come from `generator`.

    DataLoader workers are not persistent: each epoch's workers are seeded from `generator`
    as the epoch starts, so a job resumed from a checkpoint draws what the uninterrupted job
    drew. Persistent workers draw their seed once, in the first epoch a process runs, which
    shifts the generator's stream and the workers' augmentation after a resume."""
    kind = choose(kind, splits, device)
    if kind == "device":
        train: Iterable[Any] = DeviceLoader.from_dataset(splits.train, batch_size, device=device,
                                                         generator=generator)
    else:
        train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=False,
                           generator=generator, num_workers=num_workers,
                           pin_memory=device.type == "cuda")
    test = eval_loader(splits.test, eval_batch_size, device, kind, num_workers)
    val = (eval_loader(splits.val, eval_batch_size, device, kind, num_workers)
           if splits.val is not None else None)
    return Loaders(train, test, val, kind)
