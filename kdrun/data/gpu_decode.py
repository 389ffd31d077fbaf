"""JPEG decoding on the GPU (nvJPEG through torchvision.io.decode_jpeg(device="cuda")).

Decoding is most of what an ImageNet loader worker does. With `recipe.gpu_decode: on`, workers
only read each file's bytes; the training process decodes a whole batch on the GPU and applies
the dataset's own transform there, each image under the seed the sampler drew for it
(kdrun.data.seeded), so every image gets the crop and flip the CPU pipeline would give it.
It decides how, not what: only the pixel arithmetic differs (nvJPEG's IDCT and the GPU's
resampling round differently from libjpeg's and PIL's in the last bit). Files nvJPEG cannot
decode (CMYK or PNG data named .JPEG, a few of them in ImageNet) are decoded on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from kdrun.data.seeded import SeededSampler, batches, seeded_call
from kdrun.data.shards import Shard


def has_files(ds: Dataset) -> bool:
    """Whether a dataset is a list of image files (ImageFolder, kdrun.data.files)."""
    return hasattr(ds, "samples") and hasattr(ds, "transform")


class EncodedFiles(Dataset):
    """(file bytes, seed, label) for a key (index, seed): no decoding in the workers."""

    def __init__(self, ds: Any) -> None:
        self.samples = ds.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int]:
        from torchvision.io import read_file

        index, seed = key
        path, label = self.samples[index]
        return read_file(str(path)), seed, int(label)


def collate(batch: list[tuple[Tensor, int, int]]) -> tuple[list[Tensor], Tensor, Tensor]:
    data, seeds, labels = zip(*batch, strict=True)
    return list(data), torch.tensor(seeds, dtype=torch.int64), torch.tensor(labels)


def decode(data: list[Tensor], device: torch.device) -> list[Tensor]:
    """uint8 RGB CHW images on `device`, a batch at a time, per image on the CPU if need be."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
        return out


class GpuDecodeLoader:
    """Wraps a DataLoader of EncodedFiles batches: yields (images, labels) like the CPU
    pipeline, decoded and transformed on `device`."""

    def __init__(self, loader: Iterable[Any], transform: Any, device: torch.device) -> None:
        from torchvision.transforms import v2 as T

        self.loader, self.device = loader, device
        # The random, per-image part runs image by image under each image's seed; the
        # closing ToDtype + Normalize (deterministic) once on the stacked batch.
        steps = list(getattr(transform, "transforms", [transform]))
        tail = steps[-2:]
        if [type(t) for t in tail] == [T.ToDtype, T.Normalize]:
            self.each, self.batch = T.Compose(steps[:-2]), T.Compose(tail)
        else:
            self.each, self.batch = transform, None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for data, seeds, labels in self.loader:
            images = decode(data, self.device)
            x = torch.stack([seeded_call(int(s), self.each, img)
                             for s, img in zip(seeds.tolist(), images, strict=True)])
            if self.batch is not None:
                x = self.batch(x)
            yield x, labels.to(self.device, non_blocking=True)


def gpu_loaders(splits: Any, device: torch.device, generator: torch.Generator, batch_size: int,
                eval_batch_size: int, worker_args: dict[str, Any],
                shard: Shard | None = None) -> tuple[Any, Any, Any]:
    """(train, test, val) decoding on `device`; the training stream is the CPU path's, and
    a `shard` (DDP) cuts it and the evaluation splits as kdrun.data.loaders does."""
    from torch.utils.data import DataLoader

    def make(ds: Any, bs: int, gen: torch.Generator, shuffle: bool) -> GpuDecodeLoader:
        files = EncodedFiles(ds)
        if shard is not None and not shuffle:  # this rank's run of whole eval batches
            lo, hi = shard.eval_range(len(files), bs)
            files.samples = files.samples[lo:hi]
        keys = batches(SeededSampler(len(files), gen, shuffle), bs,
                       shard if shuffle else None)  # eval: cut to its run above
        dl = DataLoader(files, batch_sampler=keys, collate_fn=collate,  # type: ignore[arg-type]
                        generator=torch.Generator(), **worker_args)
        return GpuDecodeLoader(dl, ds.transform, device)

    train = make(splits.train, batch_size, generator, True)
    test = make(splits.test, eval_batch_size, torch.Generator(), False)
    val = (make(splits.val, eval_batch_size, torch.Generator(), False)
           if splits.val is not None else None)
    return train, test, val
