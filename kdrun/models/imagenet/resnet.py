"""ImageNet ResNets (He et al. 2016) built on torchvision, so torchvision / mdistiller
ImageNet checkpoints load with ``strict=True``; adds ``forward_features`` for KD methods.

The names are registered here; the class (and torchvision) load when one is built
(kdrun.models.imagenet.tv_resnet), so CIFAR jobs never import torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

from kdrun.models.registry import register

# name -> (torchvision block class name, blocks per stage)
_SPECS: dict[str, tuple[str, list[int]]] = {
    "ResNet18": ("BasicBlock", [2, 2, 2, 2]),
    "ResNet34": ("BasicBlock", [3, 4, 6, 3]),
    "ResNet50": ("Bottleneck", [3, 4, 6, 3]),
    "ResNet101": ("Bottleneck", [3, 4, 23, 3]),
    "ResNet152": ("Bottleneck", [3, 8, 36, 3]),
}


def _builder(block: str, layers: list[int]) -> Callable[..., object]:
    def build(num_classes: int = 1000):
        from kdrun.models.imagenet.tv_resnet import ImageNetResNet, tv

        return ImageNetResNet(getattr(tv, block), layers, num_classes=num_classes)

    return build


for _name, (_block, _layers) in _SPECS.items():
    _fn = _builder(_block, _layers)
    _fn.__name__ = _name
    _fn.__doc__ = f"torchvision {_name.lower()} layout."
    register(_name, "imagenet")(_fn)
