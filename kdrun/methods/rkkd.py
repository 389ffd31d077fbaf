"""RKKD (Guan et al., arXiv 2409.17823, ICML 2025): a Kendall's-tau ranking loss on logits."""

from __future__ import annotations

import torch.nn.functional as F

from kdrun.methods.catalog import RKKDParams, RKKDSpec  # noqa: F401  (re-export)
from kdrun.methods.compose import AddOnMethod
from kdrun.methods.ranking import kendall_tau
from kdrun.methods.registry import register


@register
class RKKD(RKKDSpec, AddOnMethod):
    """`ce_weight*CE + weight * (1 - mean_batch tau(zs, zt))` on raw logits (no softmax, no T),

        tau = 2/(C(C-1)) * sum_{i<j} f(k*(zs_i - zs_j)) * g(k*(zt_i - zt_j)),

    which asks the student to order the classes as the teacher does, including the
    low-ranked ones that KL barely sees. Usually added to a base method: `kd+rkkd`,
    `dkd+rkkd`, `dist+rkkd` (as an add-on it has no `ce_weight`).

    Known: f = g = tanh (`form="tanh"`), raw logits, large k best (k=100), the ranking weight
    equal to the base's KL weight (so as an add-on to a base with `kd_weight`, `weight`
    defaults to it), and an ablation over channel subsets. Reconstructions:
    - `form`: "sigmoid" uses 2*sigmoid(k*x) - 1 on both sides (= tanh at k/2, kept so an
      ablation can be named as in the paper); "sign_teacher" uses g = sign (exact teacher
      order, ties 0);
    - `channels`="top"/"bottom" keeps, per sample, the `channel_frac` classes with the
      highest/lowest teacher logit (at least 2) and ranks only the pairs among them;
    - standalone weights `weight`=1, `ce_weight`=1.
    For finite k the loss is not minimal at zs = zt: stretching zs saturates f and lowers it;
    it is 0 exactly only in the limit of large k for an order-preserving student.
    Memory is O(B*C) via `ranking.kendall_tau` (chunked, analytic backward).
    """

    def tau(self, student_logits, teacher_logits):
        p = self.p
        zs, zt = student_logits, teacher_logits.detach()
        if p.channels != "all":
            m = min(zs.shape[1], max(2, round(p.channel_frac * zs.shape[1])))
            idx = zt.topk(m, dim=1, largest=p.channels == "top").indices
            zs, zt = zs.gather(1, idx), zt.gather(1, idx)
        if p.form == "sign_teacher":
            return kendall_tau(zs, zt, p.k, teacher_k=None)
        k = p.k / 2 if p.form == "sigmoid" else p.k
        return kendall_tau(zs, zt, k, teacher_k=k)

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        rank = 1 - self.tau(student_logits, teacher_logits).mean()
        loss = p.ce_weight * ce + p.weight * rank
        return loss, {"ce": ce.detach(), "rank": rank.detach()}
