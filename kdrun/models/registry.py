"""Model registry: (zoo, name) -> constructor. Zoos are "cifar100" (32x32) and "imagenet".

Tiny-ImageNet (64x64) draws from both: the CIFAR zoo's nets (global pooling makes them run at
64x64, as the KD papers adapt them) and, under names the CIFAR zoo does not use, the ImageNet
zoo's.

The names are written out here, so a grid's architectures are checked without importing the
zoos (torch); `create` imports the zoos. A kdrun architecture adds its name to NAMES
(tests/test_light_imports.py checks they agree); a plugin's joins NAMES when it registers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from kdrun.errors import UserError

if TYPE_CHECKING:
    from torch import nn

ZOOS = ("cifar100", "imagenet")
# Every architecture each zoo registers (kdrun.models.cifar, kdrun.models.imagenet).
NAMES = {
    "cifar100": ("MobileNetV2", "ResNet18", "ResNet50", "ShuffleV1", "ShuffleV2", "resnet110",
                 "resnet14", "resnet20", "resnet32", "resnet32x4", "resnet44", "resnet56",
                 "resnet8", "resnet8x4", "vgg11", "vgg13", "vgg16", "vgg19", "vgg8", "wrn_16_1",
                 "wrn_16_2", "wrn_40_1", "wrn_40_2"),
    "imagenet": ("MobileNetV1", "ResNet101", "ResNet152", "ResNet18", "ResNet34", "ResNet50"),
}
_MODELS: dict[tuple[str, str], Callable[..., nn.Module]] = {}


def register(name: str, zoo: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = (zoo, name)
        if zoo not in ZOOS or key in _MODELS:
            raise ValueError(f"bad or duplicate model registration {key}")
        if name not in NAMES[zoo]:  # a plugin's: known once its module is imported
            NAMES[zoo] = (*NAMES[zoo], name)
        _MODELS[key] = fn
        return fn

    return deco


def load_zoos() -> None:
    """Import the zoos, which register their constructors (torch)."""
    for zoo in ZOOS:
        importlib.import_module(f"kdrun.models.{'cifar' if zoo == 'cifar100' else zoo}")


# Datasets that draw from several zoos, first match wins (names shared by two zoos, e.g.
# ResNet18, are the CIFAR-style nets there: 3x3 stem, no max-pool, as 64x64 inputs want).
_CHAINS = {"tiny_imagenet": ("cifar100", "imagenet")}


def zoo_of(dataset: str) -> str:
    """Which zoo a dataset draws from: ImageNet-sized inputs use the ImageNet zoo."""
    return "imagenet" if dataset == "imagenet" else "cifar100"


def _zoos(dataset: str) -> tuple[str, ...]:
    return _CHAINS.get(dataset, (zoo_of(dataset),))


def available(dataset: str | None = None) -> list[str]:
    zoos = _zoos(dataset) if dataset else ZOOS
    return sorted({n for z in zoos for n in NAMES[z]})


def create(name: str, num_classes: int = 100, dataset: str = "cifar100") -> nn.Module:
    load_zoos()
    fn = next((_MODELS[(z, name)] for z in _zoos(dataset) if (z, name) in _MODELS), None)
    if fn is None:
        raise UserError(
            f"unknown {'/'.join(_zoos(dataset))} architecture {name!r}; "
            f"valid: {', '.join(available(dataset))}"
        )
    return fn(num_classes=num_classes)
