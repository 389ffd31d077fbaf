"""DIST (Huang et al. NeurIPS 2022): match the teacher's predictions up to an affine map,
via Pearson correlation across classes (inter) and across the batch (intra), which is more
tolerant than KL when the teacher is much stronger than the student."""

from __future__ import annotations

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.catalog import DISTParams, DISTSpec  # noqa: F401  (re-export)
from kdrun.methods.functional import pearson
from kdrun.methods.registry import register


def inter_intra(student_logits, teacher_logits, T: float):
    """DIST's terms on `p = softmax(z/T)`: per-sample `1 - pearson` over classes, and the
    batch-mean `1 - pearson` over the batch per class (the intra term needs B >= 2)."""
    ps = F.softmax(student_logits / T, dim=1)
    pt = F.softmax(teacher_logits / T, dim=1)
    return 1 - pearson(ps, pt), (1 - pearson(ps.T, pt.T)).mean()


@register
class DIST(DISTSpec, Method):
    """`ce_weight*CE + T^2 * (beta*inter + gamma*intra)`; CIFAR-100 defaults, ImageNet T=1."""

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        inter, intra = inter_intra(student_logits, teacher_logits, p.T)
        inter, intra = inter.mean() * p.T**2, intra * p.T**2
        loss = p.ce_weight * ce + p.beta * inter + p.gamma * intra
        return loss, {"ce": ce.detach(), "inter": inter.detach(), "intra": intra.detach()}
