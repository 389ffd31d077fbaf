"""CIFAR ResNets (He et al. 2016, Sec. 4.2) in the RepDistiller / mdistiller layout.

Three stages of BasicBlocks (depth = 6n + 2), a 3x3 stem without max-pool, 8x8 average pool.
The ``x4`` variants widen every stage 4x (stem 32, stages 64/128/256), as used by CRD and
later KD papers. Keys match the published ``cifar_teachers`` checkpoints; as in RepDistiller,
the residual sum is the block's pre-activation and ReLU is applied after the addition.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, GlobalAvgPool, ZooModel, features
from kdrun.models.registry import register


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, unit BN, as RepDistiller initialises its ResNets."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        preact = self._residual(x) + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._residual(x)
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out)


def run_stage_preact(
    stage: nn.Sequential, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage of blocks, returning its output and the last block's pre-activation."""
    blocks = list(stage)
    for block in blocks[:-1]:
        x = block(x)
    return blocks[-1].forward_preact(x)


class CifarResNet(ZooModel):
    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], bottleneck: bool = False,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        block: type[BasicBlock | Bottleneck] = Bottleneck if bottleneck else BasicBlock
        per_block = 9 if bottleneck else 6
        if (depth - 2) % per_block:
            raise ValueError(f"depth {depth} is not {per_block}n+2")
        n = (depth - 2) // per_block
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[1], n)
        self.layer2 = self._make_layer(block, widths[2], n, stride=2)
        self.layer3 = self._make_layer(block, widths[3], n, stride=2)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        init_weights(self)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        stem = self.relu(self.bn1(self.conv1(x)))
        stages, preacts = [], []
        x = stem
        for stage in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage_preact(stage, x)
            stages.append(x)
            preacts.append(pre)
        pooled = torch.flatten(self.avgpool(x), 1)
        return features(stages, pooled, self.fc(pooled), preact_stages=preacts, stem=stem)


_SPECS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    @register(name, "cifar100")
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"CIFAR {name}: depth {depth}, widths {widths} (RepDistiller layout)."


for _name, (_depth, _widths) in _SPECS.items():
    _register(_name, _depth, _widths)
