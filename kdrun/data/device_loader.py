"""Batches of CIFAR-style images from a device-resident uint8 copy, augmented on the device.

With small models on a GPU the torchvision pipeline (per-image crop, flip and normalize in
DataLoader workers) rather than the model bounds throughput. Here the whole uint8 dataset
lives on the device and a batch is one gather plus one normalization. The augmentation is
the torchvision one, view for view: zero padding, a crop offset uniform over the
(2 * padding + 1)^2 positions like RandomCrop, a flip with probability 1/2 like
RandomHorizontalFlip, then x / 255 and (x - mean) / std with the same float32 operations.

The epoch's order, offsets and flips are drawn up front from a *CPU* torch.Generator, so the
stream depends on the seed alone (the same on CPU and GPU) and the generator's state at an
epoch boundary is the loader's whole resumable state. Every sampled view is named by
(index, dy, dx, flip) and `render` reproduces it exactly, which an exact teacher-logit cache
can key on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdrun.data.images import ArrayImages
from kdrun.data.shards import Shard


@dataclass(frozen=True)
class Views:
    """Which augmented views a batch holds: dataset index, crop offset in the padded image
    (dy, dx in 0..2*padding; padding, padding is the uncropped image) and horizontal flip."""

    index: Tensor  # int64 [B]
    dy: Tensor  # int64 [B]
    dx: Tensor  # int64 [B]
    flip: Tensor  # bool [B]

    def __len__(self) -> int:
        return self.index.shape[0]

    def __getitem__(self, s: slice) -> Views:
        return Views(self.index[s], self.dy[s], self.dx[s], self.flip[s])

    def to(self, device: torch.device | str) -> Views:
        return Views(*(t.to(device, non_blocking=True)
                       for t in (self.index, self.dy, self.dx, self.flip)))


class DeviceLoader:
    """An iterable of (images, labels) batches like a shuffling DataLoader over the CIFAR
    pipeline, computed on `device` from uint8 NHWC images held there.

    train=True: a fresh permutation, crop offsets and flips each epoch, drawn from `generator`.
    train=False: dataset order, no augmentation (the evaluation pipeline).
    shard: under DDP each batch is this rank's contiguous part of the global batch (the plan,
    and so the generator's stream, is the same on every rank; kdrun.data.shards).
    """

    def __init__(self, data: np.ndarray | Tensor, targets: np.ndarray | Tensor, batch_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], *,
                 device: torch.device | str = "cpu", train: bool = True,
                 generator: torch.Generator | None = None, padding: int = 4,
                 drop_last: bool = False, shard: Shard | None = None) -> None:
        data = torch.as_tensor(data)
        if data.dtype != torch.uint8 or data.ndim != 4 or data.shape[-1] != 3:
            raise ValueError(f"expected uint8 NHWC images, got {data.dtype} {tuple(data.shape)}")
        if train and generator is None:
            raise ValueError("a training DeviceLoader needs a torch.Generator")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("the generator must be a CPU generator (the stream is device-free)")
        self.device = torch.device(device)
        self.images = data.permute(0, 3, 1, 2).contiguous().to(self.device)  # N, 3, H, W
        self.targets = torch.as_tensor(targets, dtype=torch.int64).to(self.device)
        self.batch_size, self.train, self.drop_last = batch_size, train, drop_last
        self.generator, self.padding = generator, padding
        self.shard = shard
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def from_dataset(cls, ds: ArrayImages, batch_size: int, **kw) -> DeviceLoader:
        if ds.stats is None:
            raise ValueError("this dataset's transform is not the CIFAR pipeline")
        return cls(ds.data, ds.targets, batch_size, *ds.stats, **kw)

    def __len__(self) -> int:
        n = self.targets.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan_epoch(self) -> Views:
        """The next epoch's views in batch order (advances the generator when training)."""
        n, p = self.targets.shape[0], self.padding
        if not self.train:
            idx = torch.arange(n)
            return Views(idx, torch.full((n,), p), torch.full((n,), p),
                         torch.zeros(n, dtype=torch.bool))
        g = self.generator
        idx = torch.randperm(n, generator=g)
        off = torch.randint(0, 2 * p + 1, (2, n), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        return Views(idx, off[0], off[1], flip)

    def render(self, v: Views) -> Tensor:
        """Normalized float32 NCHW images of the given views (bit-identical to torchvision)."""
        v = v.to(self.device)
        _, c, h, w = self.images.shape
        rows = v.dy[:, None] - self.padding + torch.arange(h, device=self.device)  # B, H
        cols = v.dx[:, None] - self.padding + torch.arange(w, device=self.device)  # B, W
        cols = torch.where(v.flip[:, None], cols.flip(1), cols)
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[:, None, None, :])  # outside = zero padding
        x = self.images[v.index[:, None, None, None],
                        torch.arange(c, device=self.device)[None, :, None, None],
                        rows.clamp(0, h - 1)[:, None, :, None],
                        cols.clamp(0, w - 1)[:, None, None, :]]
        x = x.masked_fill_(~inside, 0)
        return x.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)

    def batches(self, with_views: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """(images, labels) per batch, or (images, labels, views) with with_views=True."""
        plan = self.plan_epoch().to(self.device)
        for b in range(len(self)):
            v = plan[b * self.batch_size : (b + 1) * self.batch_size]
            if self.shard is not None:
                v = v[self.shard.batch(len(v))]
            x, y = self.render(v), self.targets[v.index]
            yield (x, y, v) if with_views else (x, y)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self.batches()

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if self.generator is not None:
            self.generator.set_state(state["generator"])
