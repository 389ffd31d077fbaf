"""ShuffleNetV1 (g=3) for CIFAR, RepDistiller's ``ShuffleNetv1.py`` (kuangliu layout).

1x1 stem to 24 channels (no stride, no max-pool); stages of 4/8/4 bottlenecks with
240/480/960 output channels; grouped 1x1 convs with a channel shuffle after the first
(the first block of stage 1 uses g=1 for its input conv, since 24 channels are too few);
stride-2 blocks concatenate a 3x3 average-pooled shortcut; 4x4 average pool.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, ZooModel, features, global_avg_pool
from kdrun.models.cifar.resnet import run_stage_preact
from kdrun.models.cifar.shuffle import ShuffleBlock
from kdrun.models.registry import register


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = cout // 4
        g = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ShuffleBlock(groups=g)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        preact = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class ShuffleNetV1(ZooModel):
    def __init__(
        self, out_planes: tuple[int, int, int], num_blocks: tuple[int, int, int], groups: int,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, n: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(n):
            # stride-2 blocks concatenate the shortcut, so their branch makes the difference
            cat_planes = self.in_planes if i == 0 else 0
            layers.append(
                Bottleneck(self.in_planes, out_planes - cat_planes, 2 if i == 0 else 1, groups)
            )
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(global_avg_pool(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        stem = x = F.relu(self.bn1(self.conv1(x)))
        stages, preacts = [], []
        for stage in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage_preact(stage, x)
            stages.append(x)
            preacts.append(pre)
        pooled = torch.flatten(global_avg_pool(x), 1)
        return features(stages, pooled, self.linear(pooled), preact_stages=preacts, stem=stem)


@register("ShuffleV1", "cifar100")
def shufflev1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), groups=3, num_classes=num_classes)
