"""MobileNetV1 (Howard et al. 2017) for ImageNet, in mdistiller's layout (``model.N.M``).

A 3x3 stride-2 stem and 13 depthwise-separable blocks (dw 3x3 - BN - ReLU - pw 1x1 - BN -
ReLU) in one ``model`` Sequential ending in a 7x7 average pool, then ``fc``. Feature taps
follow mdistiller: outputs of blocks 3, 5, 11 and 13.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, GlobalAvgPool, ZooModel, features
from kdrun.models.registry import register

# (in, out, stride) of the depthwise-separable blocks
DW_CFG: list[tuple[int, int, int]] = [
    (32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
    *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1),
]
# indices into `model` whose output (before its final ReLU) is a stage feature
STAGE_ENDS = (3, 5, 11, 13)


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(ZooModel):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.model = nn.Sequential(
            conv_bn(3, 32, 2), *[conv_dw(i, o, s) for i, o, s in DW_CFG], GlobalAvgPool()
        )
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        stages, preacts = [], []
        start = 0
        for end in STAGE_ENDS:
            x = self.model[start:end](x)
            pre = self.model[end][:-1](x)  # the block without its final ReLU
            x = F.relu(pre)
            stages.append(x)
            preacts.append(pre)
            start = end + 1
        pooled = torch.flatten(self.model[-1](x), 1)
        return features(stages, pooled, self.fc(pooled), preact_stages=preacts)


@register("MobileNetV1", "imagenet")
def mobilenetv1(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes)
