"""Plain cross-entropy: students trained alone, and how teachers are trained."""

from __future__ import annotations

import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.catalog import VanillaSpec
from kdrun.methods.registry import register


@register
class Vanilla(VanillaSpec, Method):
    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        ce = F.cross_entropy(student_logits, targets)
        return ce, {"ce": ce.detach()}
