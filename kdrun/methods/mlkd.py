"""MLKD (Jin et al., CVPR 2023): multi-level logit distillation over two augmented views.

Facts from the authors' code (Jin-Ying/Multi-Level-Logit-Distillation, `KD_ours.py`; the LS
authors' `MLKD.py` adds logit standardization), with `p = softmax(z / t)`:

- every image comes as a weak view (crop + flip) and a strong one (crop + flip +
  RandAugment(2) + cutout; kdrun.data.views); student and teacher run on both;
- instance level: `KD_t = t^2 * KL(p_t || p_s)`, batch mean; class level: `CC_t =
  ||P_t^T P_t - P_s^T P_s||^2 / C`; batch level: `BC_t = ||P_t P_t^T - P_s P_s^T||^2 / B`
  (P the `[B, C]` probability matrix); each summed over the temperatures `T, 3, 5, 2, 6`
  (T: the KD temperature, 4 on CIFAR; the LS trainer sets it to the base temperature);
- confidence masks from the teacher's weak-view softmax: a sample is kept when its max
  probability is <= the batch median, a class when its summed probability is <= the median
  over classes. In the code the KD/CC/BC terms are batch scalars, so multiplying by a mask
  and averaging scales each term by the kept *fraction* (~1/2); kdrun computes exactly that;
- loss = `ce_weight * (CE_weak + CE_strong) + kd_weight * (m * sum_t KD_t(weak)
  + sum_{t in T,3,5} KD_t(strong) + sum_{t in 2,6} KD_t(weak) + c * sum_t CC_t(weak)
  + m * sum_t BC_t(weak))`, m / c the kept sample / class fractions. The strong-view KD sum
  takes its last two temperatures (2, 6) on the *weak* view, as the code does
  (`weak_in_strong: 2`; 0 puts all five on the strong view); the strong-view CC/BC terms
  are computed there but not added to the loss, so kdrun leaves them out;
- with `+ls` only the KD terms see standardized logits (CC/BC stay on raw logits);
- CIFAR-100: T 4, CE 0.1, KD 0.9 (mdistiller's KD config), lr 0.025 (0.01 for
  MobileNetV2/ShuffleNet) in their configs; the recipe is the grid's (see grids/).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdrun.methods.base import Method
from kdrun.methods.catalog import MLKDParams, MLKDSpec  # noqa: F401  (re-export)
from kdrun.methods.registry import register


def kd_term(zs: torch.Tensor, zt: torch.Tensor, t: float) -> torch.Tensor:
    log_ps, log_pt = F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean() * t**2


def class_term(zs: torch.Tensor, zt: torch.Tensor, t: float) -> torch.Tensor:
    ps, pt = F.softmax(zs / t, 1), F.softmax(zt / t, 1)
    return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / zs.shape[1]


def batch_term(zs: torch.Tensor, zt: torch.Tensor, t: float) -> torch.Tensor:
    ps, pt = F.softmax(zs / t, 1), F.softmax(zt / t, 1)
    return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / zs.shape[0]


@register
class MLKD(MLKDSpec, Method):
    """Instance-, class- and batch-level alignment over five temperatures and two views."""

    def masks(self, zt_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept fraction of samples and of classes (confidence <= the median)."""
        with torch.no_grad():
            pt = F.softmax(zt_weak, 1)
            conf = pt.max(1).values
            per_class = pt.sum(0)
            q = self.p.quantile
            m = (conf <= torch.quantile(conf, q)).float().mean()
            c = (per_class <= torch.quantile(per_class, q)).float().mean()
        return m, c

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        zs_w, zs_s = student_logits.chunk(2)
        zt_w, zt_s = teacher_logits.chunk(2)
        ce = F.cross_entropy(student_logits, targets) * 2  # CE_weak + CE_strong
        m, c = self.masks(zt_w)
        temps = [p.T, *p.temperatures]
        mod = self.modifier
        ks_w, kt_w, ks_s, kt_s = ((mod(z) if mod is not None else z)
                                  for z in (zs_w, zt_w, zs_s, zt_s))
        kd_weak = m * sum(kd_term(ks_w, kt_w, t) for t in temps)
        first_weak = len(temps) - p.weak_in_strong
        kd_strong = sum(kd_term(ks_w, kt_w, t) if i >= first_weak else kd_term(ks_s, kt_s, t)
                        for i, t in enumerate(temps))
        cc = c * sum(class_term(zs_w, zt_w, t) for t in temps)
        bc = m * sum(batch_term(zs_w, zt_w, t) for t in temps)
        loss = p.ce_weight * ce + p.kd_weight * (kd_weak + kd_strong + cc + bc)
        comps = {"ce": ce, "kd_weak": kd_weak, "kd_strong": kd_strong, "cc": cc, "bc": bc,
                 "kept_samples": m, "kept_classes": c}
        return loss, {k: v.detach() for k, v in comps.items()}
