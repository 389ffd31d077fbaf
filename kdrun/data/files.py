"""Image files listed explicitly: (path, label) pairs, decoded with PIL as ImageFolder does.

For datasets whose labels are not the folder an image sits in (Tiny-ImageNet's validation
images are in one folder, labelled by val_annotations.txt), so nothing has to be moved or
re-sorted on disk. Like ImageFolder it has `samples` and `transform`, which the GPU decode
path (kdrun.data.gpu_decode) reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset


class FileImages(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], transform: Any = None) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return (self.transform(img) if self.transform is not None else img), label
