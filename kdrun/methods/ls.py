"""Logit standardization (Sun et al. CVPR 2024) as a modifier: `kd+ls`, `dkd+ls`, ...

Student and teacher logits are z-scored per sample before the base method's distillation
terms, so the student must match the teacher's logit *shape*, not its scale/offset. The CE
stays on the raw student logits (as in the authors' code; see compose.py).
"""

from __future__ import annotations

from kdrun.methods.catalog import LSParams, LSSpec  # noqa: F401  (re-export)
from kdrun.methods.compose import Modifier
from kdrun.methods.functional import standardize
from kdrun.methods.registry import register


@register
class LS(LSSpec, Modifier):
    """`z -> (z - mean(z)) / (std(z) + eps)` for both student and teacher."""

    def forward(self, logits):
        return standardize(logits, self.p.eps)
