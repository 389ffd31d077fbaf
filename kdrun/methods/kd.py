"""Hinton et al. 2015: cross-entropy plus temperature-scaled KL to the teacher."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.registry import register


def kl_div(student_logits, teacher_logits, T: float):
    """Batch-mean KL(p_t || p_s) at temperature T (without the T^2 factor)."""
    log_ps = F.log_softmax(student_logits / T, dim=1)
    log_pt = F.log_softmax(teacher_logits / T, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()


@dataclass
class KDParams:
    T: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9


@register
class KD(Method):
    name = "kd"
    Params = KDParams

    @classmethod
    def defaults(cls, *, teacher, student, dataset):
        # mdistiller: CIFAR-100 T=4, 0.1/0.9; ImageNet T=1, 0.5/0.5.
        return {"T": 1.0, "ce_weight": 0.5, "kd_weight": 0.5} if dataset == "imagenet" else {}

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        kd = kl_div(student_logits, teacher_logits, p.T) * p.T**2
        loss = p.ce_weight * ce + p.kd_weight * kd
        return loss, {"ce": ce.detach(), "kd": kd.detach()}
