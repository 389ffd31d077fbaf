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
from torch.utils.data import DataLoader, Dataset, Subset

from kdrun.data.device_loader import DeviceLoader
from kdrun.data.gpu_decode import gpu_loaders, has_files
from kdrun.data.images import ArrayImages
from kdrun.data.registry import Splits
from kdrun.data.seeded import Seeded, SeededSampler, batches
from kdrun.data.shards import Shard
from kdrun.data.views import MultiView
from kdrun.errors import ConfigError

LOADERS = ("auto", "torch", "device")


@dataclass
class Loaders:
    train: Iterable[Any]
    test: Iterable[Any]
    val: Iterable[Any] | None
    kind: str  # "torch" or "device"
    decode: str | None = None  # where JPEG files were decoded ("cpu" / "cuda"); None: no files

    def record(self) -> dict[str, Any]:
        """For the result's switches: where JPEGs were decoded, for datasets of files."""
        return {"decode": self.decode} if self.decode else {}


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
                num_workers: int = 0, shard: Shard | None = None) -> Iterable[Any]:
    """Unshuffled, unaugmented batches of an evaluation split; with a `shard`, this rank's
    run of whole batches (kdrun.data.shards), each the batch a single process evaluates."""
    n = len(ds)  # type: ignore[arg-type]
    lo, hi = shard.eval_range(n, batch_size) if shard is not None else (0, n)
    if kind == "device" and on_device(ds):  # an ArrayImages with the CIFAR pipeline
        return DeviceLoader(ds.data[lo:hi], ds.targets[lo:hi], batch_size,  # type: ignore
                            *ds.stats, device=device, train=False)  # type: ignore
    if shard is not None:
        ds = Subset(ds, range(lo, hi))
    return DataLoader(ds, batch_size=batch_size, **worker_args(num_workers, device))


PREFETCH = 4  # batches each loader worker keeps ready


def worker_args(num_workers: int, device: torch.device) -> dict[str, Any]:
    """Persistent workers with prefetch (no process start-up per epoch), and pinned host
    memory on CUDA, so batches reach the GPU by asynchronous copies."""
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda",
            "persistent_workers": num_workers > 0,
            "prefetch_factor": PREFETCH if num_workers > 0 else None}


def train_loader(ds: Dataset, batch_size: int, device: torch.device,
                 generator: torch.Generator, num_workers: int = 0,
                 shard: Shard | None = None) -> DataLoader:
    """Shuffled training batches whose order and per-sample augmentation seeds come from
    `generator` (kdrun.data.seeded): the same stream with any number of workers, resumable
    exactly. The DataLoader's own generator only seeds its workers' base seed, unused here.
    With a `shard`, each batch is this rank's slice of the global one."""
    keys = batches(SeededSampler(len(ds), generator), batch_size, shard)  # type: ignore[arg-type]
    return DataLoader(Seeded(ds), batch_sampler=keys,  # type: ignore[arg-type]
                      generator=torch.Generator(), **worker_args(num_workers, device))


def make_loaders(splits: Splits, kind: str, device: torch.device, generator: torch.Generator, *,
                 batch_size: int, eval_batch_size: int, num_workers: int = 0,
                 views: tuple[str, ...] = ("weak",), gpu_decode: bool = False,
                 shard: Shard | None = None) -> Loaders:
    """All of a job's loaders; the training order and augmentation come from `generator`.
    `views` beyond the plain weak one (a method's Method.views) take the torch path: each
    training batch is then a list of batches, one per view (kdrun.data.views).

    The plain torch path draws each sample's augmentation seed from `generator`
    (kdrun.data.seeded), so its workers are persistent and a resumed job still draws what the
    uninterrupted one drew. `gpu_decode` decodes JPEG files on a CUDA device
    (kdrun.data.gpu_decode); elsewhere it is ignored (Loaders.decode says which ran).
    `shard` (DDP): this rank's part of every training batch and of each evaluation split
    (kdrun.data.shards); None: everything."""
    multi = tuple(views) != ("weak",)
    if multi and kind == "device":
        raise ConfigError(f"loader: device cannot make the {'+'.join(views)} views this "
                          "method needs; use loader: torch or auto")
    kind = "torch" if multi else choose(kind, splits, device)
    if multi:
        train: Iterable[Any] = train_loader(MultiView(splits.train, tuple(views)), batch_size,
                                            device, generator, num_workers, shard)
    elif kind == "device":
        train = DeviceLoader.from_dataset(splits.train, batch_size, device=device,
                                          generator=generator, shard=shard)
    elif gpu_decode and device.type == "cuda" and has_files(splits.train):
        train, test, val = gpu_loaders(splits, device, generator, batch_size,
                                       eval_batch_size, worker_args(num_workers, device), shard)
        return Loaders(train, test, val, "torch", decode="cuda")
    else:
        train = train_loader(splits.train, batch_size, device, generator, num_workers, shard)
    test = eval_loader(splits.test, eval_batch_size, device, kind, num_workers, shard)
    val = (eval_loader(splits.val, eval_batch_size, device, kind, num_workers, shard)
           if splits.val is not None else None)
    return Loaders(train, test, val, kind, decode="cpu" if has_files(splits.train) else None)
