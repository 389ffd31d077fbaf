"""Model registry: (zoo, name) -> constructor. Zoos are "cifar100" (32x32) and "imagenet".

Tiny-ImageNet (64x64) draws from both: the CIFAR zoo's nets (global pooling makes them run at
64x64, as the KD papers adapt them) and, under names the CIFAR zoo does not use, the ImageNet
zoo's."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kdrun.errors import UserError

ZOOS = ("cifar100", "imagenet")
_MODELS: dict[tuple[str, str], Callable[..., nn.Module]] = {}


def register(name: str, zoo: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = (zoo, name)
        if zoo not in ZOOS or key in _MODELS:
            raise ValueError(f"bad or duplicate model registration {key}")
        _MODELS[key] = fn
        return fn

    return deco


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
    return sorted({n for (z, n) in _MODELS if z in zoos})


def create(name: str, num_classes: int = 100, dataset: str = "cifar100") -> nn.Module:
    fn = next((_MODELS[(z, name)] for z in _zoos(dataset) if (z, name) in _MODELS), None)
    if fn is None:
        raise UserError(
            f"unknown {'/'.join(_zoos(dataset))} architecture {name!r}; "
            f"valid: {', '.join(available(dataset))}"
        )
    return fn(num_classes=num_classes)
