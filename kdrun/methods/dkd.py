"""Decoupled KD (Zhao et al. CVPR 2022): KL split into target-class (TCKD) and non-target
(NCKD) parts, so the non-target "dark knowledge" can be weighted up (beta) on its own."""

from __future__ import annotations

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.catalog import (  # noqa: F401  (re-exports)
    CIFAR_BETA,
    IMAGENET_BETA,
    DKDParams,
    DKDSpec,
)
from kdrun.methods.functional import split_kl
from kdrun.methods.registry import register


def warmup_factor(epoch: int, warmup: int) -> float:
    """`min(epoch / warmup, 1)`: the KD terms ramp up linearly over the first epochs."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


@register
class DKD(DKDSpec, Method):
    """`ce_weight*CE + min(epoch/warmup, 1) * T^2 * (alpha*TCKD + beta*NCKD)`.

    `epoch` counts from 1, as in kdrun's trainer and mdistiller: the first epoch has weight
    1/warmup. Model names are matched ignoring case and `_`/`-` (`wrn_40_2` = `WRN-40-2`).
    """

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        label = F.one_hot(targets, student_logits.shape[1]).bool()
        tckd, _, nckd, _, _ = split_kl(student_logits, teacher_logits, label, p.T)
        tckd, nckd = tckd.mean() * p.T**2, nckd.mean() * p.T**2
        kd = warmup_factor(epoch, p.warmup) * (p.alpha * tckd + p.beta * nckd)
        loss = p.ce_weight * ce + kd
        return loss, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}
