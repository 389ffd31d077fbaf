"""Shared interface of every zoo model.

`forward(x)` returns logits only (the training hot path). Feature-based distillation methods
call `forward_features(x)` instead, which returns a dict with at least
``"stages"`` (list of per-stage outputs, shallow to deep), ``"pooled"`` (the penultimate
embedding fed to the classifier) and ``"logits"``. Families whose reference implementation
exposes pre-activation stage outputs (RepDistiller's ``preact=True``) add ``"preact_stages"``;
models with a separate stem add ``"stem"`` (RepDistiller's ``f0``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

Features = dict[str, Any]


class ZooModel(nn.Module, ABC):
    """Base class: subclasses implement `forward` (logits) and `forward_features`."""

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> Features:
        """Logits plus intermediate features; see the module docstring for the keys."""


def features(
    stages: list[torch.Tensor],
    pooled: torch.Tensor,
    logits: torch.Tensor,
    preact_stages: list[torch.Tensor] | None = None,
    stem: torch.Tensor | None = None,
) -> Features:
    out: Features = {"stages": stages, "pooled": pooled, "logits": logits}
    if stem is not None:
        out["stem"] = stem
    if preact_stages is not None:
        out["preact_stages"] = preact_stages
    return out


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Average over the whole feature map. The CIFAR nets' fixed pools (8x8, 4x4, 2x2) are
    exactly this at 32x32, so the same nets (same weights) also run at 64x64 (Tiny-ImageNet)."""
    return F.avg_pool2d(x, tuple(x.shape[-2:]))


class GlobalAvgPool(nn.Module):
    """`global_avg_pool` as a module (no parameters: state-dict keys are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(x)
