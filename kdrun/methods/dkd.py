"""Decoupled KD (Zhao et al. CVPR 2022): KL split into target-class (TCKD) and non-target
(NCKD) parts, so the non-target "dark knowledge" can be weighted up (beta) on its own."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.functional import split_kl
from kdrun.methods.registry import register


@dataclass
class DKDParams:
    T: float = 4.0
    ce_weight: float = 1.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup: int = 20

    def __post_init__(self) -> None:
        if self.T <= 0 or self.warmup < 0:
            raise ValueError("T must be > 0 and warmup >= 0")


def _key(arch: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (arch or "").lower())


# mdistiller's per-pair beta (teacher, student); every other pair keeps the default 8.
CIFAR_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "mobilenetv2"): 6.0,
    ("wrn402", "wrn162"): 6.0,
    ("wrn402", "wrn401"): 6.0,
}
IMAGENET_BETA = {("resnet34", "resnet18"): 0.5, ("resnet50", "mobilenetv1"): 2.0}


def warmup_factor(epoch: int, warmup: int) -> float:
    """`min(epoch / warmup, 1)`: the KD terms ramp up linearly over the first epochs."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


@register
class DKD(Method):
    """`ce_weight*CE + min(epoch/warmup, 1) * T^2 * (alpha*TCKD + beta*NCKD)`.

    `epoch` counts from 1, as in kdrun's trainer and mdistiller: the first epoch has weight
    1/warmup. Model names are matched ignoring case and `_`/`-` (`wrn_40_2` = `WRN-40-2`).
    """

    name = "dkd"
    Params = DKDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        pair = (_key(teacher), _key(student))
        imagenet = dataset == "imagenet"
        out: dict = {"T": 1.0, "warmup": 1} if imagenet else {}
        betas = IMAGENET_BETA if imagenet else CIFAR_BETA
        if pair in betas:
            out["beta"] = betas[pair]
        return out

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        label = F.one_hot(targets, student_logits.shape[1]).bool()
        tckd, _, nckd, _, _ = split_kl(student_logits, teacher_logits, label, p.T)
        tckd, nckd = tckd.mean() * p.T**2, nckd.mean() * p.T**2
        kd = warmup_factor(epoch, p.warmup) * (p.alpha * tckd + p.beta * nckd)
        loss = p.ce_weight * ce + kd
        return loss, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}
