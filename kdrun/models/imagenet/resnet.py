"""ImageNet ResNets (He et al. 2016) built on torchvision, so torchvision / mdistiller
ImageNet checkpoints load with ``strict=True``; adds ``forward_features`` for KD methods."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv

from kdrun.models.base import Features, ZooModel, features
from kdrun.models.registry import register


def _run_stage_preact(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage output and the last block's pre-activation (residual sum before the ReLU)."""
    blocks = list(stage)
    for block in blocks[:-1]:
        x = block(x)
    last = blocks[-1]
    identity = x if last.downsample is None else last.downsample(x)
    out = last.relu(last.bn1(last.conv1(x)))
    if isinstance(last, tv.Bottleneck):
        out = last.relu(last.bn2(last.conv2(out)))
        out = last.bn3(last.conv3(out))
    else:
        out = last.bn2(last.conv2(out))
    preact = out + identity
    return torch.relu(preact), preact


class ImageNetResNet(tv.ResNet, ZooModel):
    """torchvision's ResNet (same modules and forward) with feature access."""

    def forward_features(self, x: torch.Tensor) -> Features:
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages, preacts = [], []
        x = stem
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x, pre = _run_stage_preact(stage, x)
            stages.append(x)
            preacts.append(pre)
        pooled = torch.flatten(self.avgpool(x), 1)
        return features(stages, pooled, self.fc(pooled), preact_stages=preacts, stem=stem)


_SPECS: dict[str, tuple[type[tv.BasicBlock | tv.Bottleneck], list[int]]] = {
    "ResNet18": (tv.BasicBlock, [2, 2, 2, 2]),
    "ResNet34": (tv.BasicBlock, [3, 4, 6, 3]),
    "ResNet50": (tv.Bottleneck, [3, 4, 6, 3]),
    "ResNet101": (tv.Bottleneck, [3, 4, 23, 3]),
    "ResNet152": (tv.Bottleneck, [3, 8, 36, 3]),
}


def _builder(block: type[tv.BasicBlock | tv.Bottleneck], layers: list[int]) -> Callable[
    ..., ImageNetResNet
]:
    def build(num_classes: int = 1000) -> ImageNetResNet:
        return ImageNetResNet(block, layers, num_classes=num_classes)

    return build


for _name, (_block, _layers) in _SPECS.items():
    _fn = _builder(_block, _layers)
    _fn.__name__ = _name
    _fn.__doc__ = f"torchvision {_name.lower()} layout."
    register(_name, "imagenet")(_fn)
