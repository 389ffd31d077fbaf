"""VGG with batch norm for CIFAR, in RepDistiller's ``vgg.py`` layout.

Five conv blocks (``block0..4``, conv-BN-ReLU with conv biases, the last ReLU of each block
applied outside it so pre-activations are available), max-pool after blocks 0-2 only at
32x32 (``pool3`` is used only for 64x64 inputs), global average pool and one ``classifier``
Linear. ``vgg8`` is RepDistiller's shallow "S" configuration.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, ZooModel, features
from kdrun.models.registry import register

CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _make_block(widths: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True)]
        cin = w
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward


class VGG(ZooModel):
    def __init__(self, cfg: list[list[int]], num_classes: int = 100) -> None:
        super().__init__()
        cins = [3] + [c[-1] for c in cfg[:-1]]
        self.block0 = _make_block(cfg[0], cins[0])
        self.block1 = _make_block(cfg[1], cins[1])
        self.block2 = _make_block(cfg[2], cins[2])
        self.block3 = _make_block(cfg[3], cins[3])
        self.block4 = _make_block(cfg[4], cins[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = x.shape[2] == 64
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if big:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.classifier(torch.flatten(self.pool4(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        big = x.shape[2] == 64
        stem = F.relu(self.block0(x))
        x = self.pool0(stem)
        stages, preacts = [], []
        for i, (block, pool) in enumerate(
            ((self.block1, self.pool1), (self.block2, self.pool2), (self.block3, self.pool3),
             (self.block4, None))
        ):
            pre = block(x)
            x = F.relu(pre)
            stages.append(x)
            preacts.append(pre)
            if pool is not None and (i < 2 or big):
                x = pool(x)
        pooled = torch.flatten(self.pool4(x), 1)
        return features(stages, pooled, self.classifier(pooled), preact_stages=preacts, stem=stem)


def _register(name: str) -> None:
    @register(name, "cifar100")
    def build(num_classes: int = 100) -> VGG:
        return VGG(CFGS[name], num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"{name} with batch norm (RepDistiller layout)."


for _name in CFGS:
    _register(_name)
