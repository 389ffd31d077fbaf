"""A deterministic synthetic image dataset with class structure, for offline runs and tests.

Classes are grouped into superclasses that share a visual pattern; each class adds its own
pattern on top. A teacher therefore confuses classes of one superclass more than others, so
its soft labels carry information a student can use -- the premise of distillation. Images
are uint8 32x32 RGB like CIFAR's and go through the same crop + flip + normalize pipeline.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from kdrun.data.catalog import SyntheticParams
from kdrun.data.images import cifar_images
from kdrun.data.registry import Splits, register


def _smooth(g: torch.Generator, n: int, res: int) -> torch.Tensor:
    """n random 3x32x32 patterns with spatial detail at resolution `res`, unit std."""
    low = torch.randn(n, 3, res, res, generator=g)
    img = F.interpolate(low, size=32, mode="bicubic", align_corners=False)
    return img / img.flatten(1).std(1).view(-1, 1, 1, 1)


def _make(p: SyntheticParams, protos: torch.Tensor, n: int, g: torch.Generator):
    labels = torch.randint(0, p.num_classes, (n,), generator=g)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    x = protos[labels] * contrast
    x = x + p.noise * (_smooth(g, n, 8) + 0.5 * torch.randn(n, 3, 32, 32, generator=g))
    shifts = torch.randint(-3, 4, (n, 2), generator=g)
    x = torch.stack([torch.roll(xi, tuple(s.tolist()), dims=(1, 2))
                     for xi, s in zip(x, shifts, strict=True)])
    u8 = ((x * 0.22 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy()


def generate(p: SyntheticParams):
    """(train_data, train_labels, test_data, test_labels) as uint8 NHWC arrays, from p.seed."""
    g = torch.Generator().manual_seed(p.seed)
    n_super = -(-p.num_classes // p.classes_per_superclass)
    supers = _smooth(g, n_super, 4)
    own = _smooth(g, p.num_classes, 6)
    protos = supers[torch.arange(p.num_classes) // p.classes_per_superclass] + 0.7 * own
    train = _make(p, protos, p.train_size, g)
    test = _make(p, protos, p.test_size, g)
    return (*train, *test)


@register("synthetic", SyntheticParams)
def build(p: SyntheticParams, data_dir: Path) -> Splits:
    xtr, ytr, xte, yte = generate(p)
    return Splits(
        train=cifar_images(xtr, ytr, train=True),
        test=cifar_images(xte, yte, train=False),
        val=None,
        num_classes=p.num_classes,
        image_size=32,
    )
