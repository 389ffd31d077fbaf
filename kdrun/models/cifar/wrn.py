"""Wide ResNets (Zagoruyko & Komodakis 2016) in RepDistiller's ``wrn.py`` layout.

Pre-activation blocks (BN-ReLU-conv); when a block changes width, the shortcut 1x1 conv
reads the *activated* input, as in the original Torch code. ``wrn_D_K``: depth D = 6n + 4,
widen factor K; a final BN-ReLU precedes 8x8 average pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kdrun.models.base import Features, ZooModel, features, global_avg_pool
from kdrun.models.registry import register


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = cin == cout
        self.convShortcut = (  # checkpoint key name
            None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward_bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block output and ``bn1(x)``, the previous stage's pre-activation feature."""
        normed = self.bn1(x)
        act = F.relu(normed)
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out, normed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(act) + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def forward_bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage output and the first block's ``bn1(x)``."""
        x, normed = self.layer[0].forward_bn(x)
        for block in list(self.layer)[1:]:
            x = block(x)
        return x, normed


class WideResNet(ZooModel):
    def __init__(self, depth: int, widen: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth {depth} is not 6n+4")
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = global_avg_pool(self.relu(self.bn1(x)))
        return self.fc(torch.flatten(x, 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        # RepDistiller's preact features: each stage output after the next BN (before ReLU),
        # taken from the BN calls of the forward pass itself (no extra running-stat updates).
        stem = self.conv1(x)
        f1 = self.block1(stem)
        f2, pre1 = self.block2.forward_bn(f1)
        f3, pre2 = self.block3.forward_bn(f2)
        pre3 = self.bn1(f3)
        pooled = torch.flatten(global_avg_pool(F.relu(pre3)), 1)
        return features(
            [f1, f2, f3], pooled, self.fc(pooled), preact_stages=[pre1, pre2, pre3], stem=stem
        )


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    @register(name, "cifar100")
    def build(num_classes: int = 100) -> WideResNet:
        return WideResNet(depth, widen, num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"WRN-{depth}-{widen} (RepDistiller layout)."


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
