"""Logit standardization (Sun et al. CVPR 2024) as a modifier: `kd+ls`, `dkd+ls`, ...

Student and teacher logits are z-scored per sample before the base method's distillation
terms, so the student must match the teacher's logit *shape*, not its scale/offset. The CE
stays on the raw student logits (as in the authors' code; see compose.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdrun.methods.compose import Modifier
from kdrun.methods.functional import standardize
from kdrun.methods.published import ls_overrides
from kdrun.methods.registry import register


@dataclass
class LSParams:
    eps: float = 1e-7


@register
class LS(Modifier):
    """`z -> (z - mean(z)) / (std(z) + eps)` for both student and teacher."""

    name = "ls"
    Params = LSParams

    # The authors tuned a base temperature and KD weight per pair and their trainer maps them
    # onto each base with its own rule (kdrun.methods.published); bases they never ran with
    # LS (dist, cakd, cmkd, ...) keep their own defaults.
    @classmethod
    def base_defaults(cls, base, *, dataset, teacher=None, student=None, current=None):
        return ls_overrides(base, current or {}, dataset=dataset, teacher=teacher,
                            student=student)[0]

    @classmethod
    def base_source(cls, base, *, dataset, teacher=None, student=None, current=None) -> str:
        return ls_overrides(base, current or {}, dataset=dataset, teacher=teacher,
                            student=student)[1]

    def forward(self, logits):
        return standardize(logits, self.p.eps)
