"""The ImageNet ResNet class: torchvision's ResNet (so torchvision / mdistiller ImageNet
checkpoints load with ``strict=True``) plus ``forward_features`` for KD methods.

Imported only when an ImageNet ResNet is built (kdrun.models.imagenet.resnet registers the
names): importing torchvision costs a CIFAR job's training process a second (its `ops` pull
in torch._dynamo)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv

from kdrun.models.base import Features, ZooModel, features


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
