"""Hinton et al. 2015: cross-entropy plus temperature-scaled KL to the teacher."""

from __future__ import annotations

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.catalog import KDParams, KDSpec  # noqa: F401  (KDParams: re-export)
from kdrun.methods.registry import register


def kl_div(student_logits, teacher_logits, T: float):
    """Batch-mean KL(p_t || p_s) at temperature T (without the T^2 factor)."""
    log_ps = F.log_softmax(student_logits / T, dim=1)
    log_pt = F.log_softmax(teacher_logits / T, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()


@register
class KD(KDSpec, Method):
    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        kd = kl_div(student_logits, teacher_logits, p.T) * p.T**2
        loss = p.ce_weight * ce + p.kd_weight * kd
        return loss, {"ce": ce.detach(), "kd": kd.detach()}
