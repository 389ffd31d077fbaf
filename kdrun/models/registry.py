"""Model registry: (zoo, name) -> constructor. Zoos are "cifar100" (32x32) and "imagenet"."""

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


def zoo_of(dataset: str) -> str:
    """Which zoo a dataset draws from: ImageNet-sized inputs use the ImageNet zoo."""
    return "imagenet" if dataset == "imagenet" else "cifar100"


def available(dataset: str | None = None) -> list[str]:
    zoo = zoo_of(dataset) if dataset else None
    return sorted({n for (z, n) in _MODELS if zoo is None or z == zoo})


def create(name: str, num_classes: int = 100, dataset: str = "cifar100") -> nn.Module:
    zoo = zoo_of(dataset)
    try:
        fn = _MODELS[(zoo, name)]
    except KeyError:
        raise UserError(
            f"unknown {zoo} architecture {name!r}; valid: {', '.join(available(dataset))}"
        ) from None
    return fn(num_classes=num_classes)
