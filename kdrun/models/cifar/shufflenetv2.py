"""ShuffleNetV2 (1x) for CIFAR, RepDistiller's ``ShuffleNetv2.py`` (kuangliu layout).

1x1 stem to 24 channels (no stride, no max-pool); each stage is a stride-2 DownBlock
followed by 3/7/3 split-transform-concat BasicBlocks (116/232/464 channels), every block
ending in a 2-group channel shuffle; 1x1 conv to 1024, 4x4 average pool.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, ZooModel, features, global_avg_pool
from kdrun.models.cifar.shuffle import ShuffleBlock
from kdrun.models.registry import register


class BasicBlock(nn.Module):
    def __init__(self, channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split_ratio = split_ratio
        c = int(channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock(groups=2)

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and RepDistiller's (unshuffled) pre-activation ``cat([x1, bn3(...)])``."""
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        return self.shuffle(torch.cat([x1, F.relu(pre)], 1)), torch.cat([x1, pre], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        # left branch: depthwise stride-2, then 1x1
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1, depthwise stride-2, 1x1
        self.conv3 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(ZooModel):
    def __init__(
        self, out_channels: tuple[int, int, int, int], num_blocks: tuple[int, int, int],
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, cout: int, n: int) -> nn.Sequential:
        layers: list[nn.Module] = [DownBlock(self.in_channels, cout)]
        layers += [BasicBlock(cout) for _ in range(n)]
        self.in_channels = cout
        return nn.Sequential(*layers)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(x)))
        return torch.flatten(global_avg_pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self._head(x))

    def forward_features(self, x: torch.Tensor) -> Features:
        stem = x = F.relu(self.bn1(self.conv1(x)))
        stages, preacts = [], []
        for stage in (self.layer1, self.layer2, self.layer3):
            blocks = list(stage)
            for block in blocks[:-1]:
                x = block(x)
            x, pre = blocks[-1].forward_preact(x)
            stages.append(x)
            preacts.append(pre)
        pooled = self._head(x)
        return features(stages, pooled, self.linear(pooled), preact_stages=preacts, stem=stem)


@register("ShuffleV2", "cifar100")
def shufflev2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes=num_classes)
