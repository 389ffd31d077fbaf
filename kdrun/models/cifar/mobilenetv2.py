"""MobileNetV2 (Sandler et al. 2018) for CIFAR, width 0.5: RepDistiller's ``mobile_half``.

The KD-literature variant: expansion T=6, stride-2 3x3 stem (32 -> 16), the standard
(t, c, n, s) table with strides 1,1,2,2,1,2,1 (so 16 -> 2 spatially), a 1x1 conv to 1280
channels (not scaled for width < 1), global average pool (2x2 at 32x32) and ``classifier.0``
Linear.
"""

from __future__ import annotations

import torch
from torch import nn

from kdrun.models.base import Features, GlobalAvgPool, ZooModel, features
from kdrun.models.registry import register

# t (expansion; None = the model's T), c (channels at width 1), n (blocks), s (first stride)
SETTING: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
# RepDistiller's feature taps: outputs of blocks 1, 2, 4 and 6.
STAGE_ENDS = (1, 2, 4, 6)


def conv_bn(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(ZooModel):
    def __init__(
        self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        cin = int(32 * width_mult)
        self.conv1 = conv_bn(3, cin, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTING:
            cout = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(cin, cout, stride, expansion if t is None else t))
                cin = cout
            self.blocks.append(nn.Sequential(*layers))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn(cin, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        self.avgpool = GlobalAvgPool()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, (2.0 / n_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        x = self.avgpool(self.conv2(x))
        return self.classifier(torch.flatten(x, 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        stem = x = self.conv1(x)
        stages = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in STAGE_ENDS:
                stages.append(x)
        pooled = torch.flatten(self.avgpool(self.conv2(x)), 1)
        return features(stages, pooled, self.classifier(pooled), stem=stem)


@register("MobileNetV2", "cifar100")
def mobilenetv2_half(num_classes: int = 100) -> MobileNetV2:
    return MobileNetV2(expansion=6, width_mult=0.5, num_classes=num_classes)
