"""Model size and cost: parameter counts and multiply-accumulates (MACs) per image.

MACs count Conv2d and Linear layers only (the convention of the KD papers' tables, e.g.
resnet32x4 ~1.08 G at 32x32, ResNet18 ~1.82 G at 224x224); BN, ReLU, pooling and additions
are ignored. Profiling builds models on the meta device, so the whole zoo takes well under
a second and no weights are allocated.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

from kdrun.models.registry import ZOOS, available, create, zoo_of

NATIVE_SIZE = {"cifar100": 32, "imagenet": 224}
NUM_CLASSES = {"cifar100": 100, "imagenet": 1000}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = module.in_channels // module.groups * kh * kw
        return out.numel() * per_output
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, input_size: int) -> int:
    """MACs of Conv2d and Linear layers for one 3 x input_size x input_size image."""
    total = 0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, out)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


@cache
def profile(name: str, zoo: str) -> dict[str, Any]:
    """Params and MACs of a zoo model at its native resolution (cached; built on meta)."""
    with torch.device("meta"):
        model = create(name, num_classes=NUM_CLASSES[zoo], dataset=zoo)
    return {
        "name": name,
        "dataset": zoo,
        "params": count_params(model),
        "macs": count_macs(model, NATIVE_SIZE[zoo]),
    }


def zoo_table(dataset: str | None = None) -> list[dict[str, Any]]:
    """One row per model (name, dataset = zoo, params, macs), for `kdrun models`."""
    zoos = [zoo_of(dataset)] if dataset else list(ZOOS)
    return [dict(profile(name, zoo)) for zoo in zoos for name in available(zoo)]
