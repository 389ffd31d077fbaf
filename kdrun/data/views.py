"""Several augmented views of each training image, for methods that need them (Method.views).

MLKD trains on a weak and a strong view of every image. The weak view is the dataset's own
CIFAR pipeline (crop + flip + normalize). The strong view follows the MLKD / LS authors'
`get_cifar100_train_transform_strong`: crop + flip, then FixMatch-style RandAugment -- two
operations drawn with replacement from 14 (auto-contrast, brightness, colour, contrast,
equalize, identity, posterize, rotate, sharpness, shear x/y, solarize, translate x/y), each
at a magnitude drawn uniformly from its range -- then a cutout of a random square (side up to
half the image) filled with (125, 123, 114), then normalize. The operations are PIL's, as
theirs; the random draws come from torch's generator (theirs: Python's `random` and numpy),
seeded per sample like the rest of the torch path (kdrun.data.seeded), so a job's stream
follows its seed and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch.utils.data import Dataset

from kdrun.data.images import ArrayImages
from kdrun.errors import ConfigError
from kdrun.lazy import lazy

# torchvision (its import pulls in torch._dynamo, ~1 s) loads when a transform is built.
T = lazy("torchvision.transforms.v2")

VIEWS = ("weak", "strong")


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs)


# (operation, low, high): the operation's magnitude is drawn uniformly in [low, high].
OPS: list[tuple[Callable[[Image.Image, float], Image.Image], float, float]] = [
    (lambda im, v: ImageOps.autocontrast(im), 0, 1),
    (lambda im, v: ImageEnhance.Brightness(im).enhance(v), 0.05, 0.95),
    (lambda im, v: ImageEnhance.Color(im).enhance(v), 0.05, 0.95),
    (lambda im, v: ImageEnhance.Contrast(im).enhance(v), 0.05, 0.95),
    (lambda im, v: ImageOps.equalize(im), 0, 1),
    (lambda im, v: im, 0, 1),
    (lambda im, v: ImageOps.posterize(im, max(1, int(v))), 4, 8),
    (lambda im, v: im.rotate(v), -30, 30),
    (lambda im, v: ImageEnhance.Sharpness(im).enhance(v), 0.05, 0.95),
    (lambda im, v: _affine(im, (1, v, 0, 0, 1, 0)), -0.3, 0.3),
    (lambda im, v: _affine(im, (1, 0, 0, v, 1, 0)), -0.3, 0.3),
    (lambda im, v: ImageOps.solarize(im, int(v)), 0, 256),
    (lambda im, v: _affine(im, (1, 0, v * im.size[0], 0, 1, 0)), -0.3, 0.3),
    (lambda im, v: _affine(im, (1, 0, 0, 0, 1, v * im.size[1])), -0.3, 0.3),
]
CUTOUT_FILL = (125, 123, 114)


def _uniform() -> float:
    return float(torch.rand(()))


def cutout(img: Image.Image, frac: float) -> Image.Image:
    """Fill a square of side `frac * width` at a uniformly drawn position (clipped)."""
    if frac <= 0:
        return img
    side = frac * img.size[0]
    w, h = img.size
    x0, y0 = int(max(0, _uniform() * w - side / 2)), int(max(0, _uniform() * h - side / 2))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
    return img


class RandAugment:
    """`n` random operations at random magnitudes, then a cutout of up to half the side."""

    def __init__(self, n: int = 2) -> None:
        self.n = n

    def __call__(self, img: Image.Image) -> Image.Image:
        for k in torch.randint(len(OPS), (self.n,)).tolist():
            op, low, high = OPS[k]
            img = op(img, low + (high - low) * _uniform())
        return cutout(img, _uniform() * 0.5)


def strong_transform(stats: tuple[tuple[float, ...], tuple[float, ...]]) -> T.Compose:
    mean, std = stats
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), RandAugment(2),
                      T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])


class MultiView(Dataset):
    """`([view_0, view_1, ...], label)` per image; collated, a batch is a list of batches."""

    def __init__(self, ds: Dataset, views: tuple[str, ...]) -> None:
        if not isinstance(ds, ArrayImages) or ds.stats is None:
            raise ConfigError(f"views {'+'.join(views)}: the strong view is defined for "
                              "in-memory 32x32 datasets with the CIFAR pipeline (cifar100, "
                              "synthetic)")
        unknown = [v for v in views if v not in VIEWS]
        if unknown:
            raise ConfigError(f"view {unknown[0]!r}: valid views are {', '.join(VIEWS)}")
        self.ds = ds
        self.strong = strong_transform(ds.stats)
        self.views = views

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        arr: np.ndarray = self.ds.data[i]
        out = []
        for v in self.views:
            if v == "weak":
                out.append(self.ds.transform(torch.from_numpy(arr).permute(2, 0, 1)))
            else:
                out.append(self.strong(Image.fromarray(arr)))
        return out, int(self.ds.targets[i])
