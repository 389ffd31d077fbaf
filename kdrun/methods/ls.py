"""Logit standardization (Sun et al. CVPR 2024) as a modifier: `kd+ls`, `dkd+ls`, ...

Student and teacher logits are z-scored per sample before the base method's distillation
terms, so the student must match the teacher's logit *shape*, not its scale/offset. The CE
stays on the raw student logits (as in the authors' code; see compose.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdrun.methods.compose import Modifier
from kdrun.methods.functional import standardize
from kdrun.methods.registry import register


@dataclass
class LSParams:
    eps: float = 1e-7


@register
class LS(Modifier):
    """`z -> (z - mean(z)) / (std(z) + eps)` for both student and teacher."""

    name = "ls"
    Params = LSParams

    # Published CIFAR-100 settings for KD+LS; for other bases and for ImageNet the reference
    # gives none, so those keep the base's own defaults.
    PUBLISHED = {"kd": {"T": 2.0, "kd_weight": 9.0, "ce_weight": 0.1}}

    @classmethod
    def base_defaults(cls, base, *, dataset):
        return {} if dataset == "imagenet" else dict(cls.PUBLISHED.get(base, {}))

    def forward(self, logits):
        return standardize(logits, self.p.eps)
