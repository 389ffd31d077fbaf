"""CTKD (Li et al., AAAI 2023): KD with a learnable temperature trained adversarially.

The temperature comes from a small module whose gradient passes through a gradient-reversal
layer (GRL), so the module *raises* the distillation loss while the student lowers it; the
reversal strength follows a curriculum (0 -> 1 over the first epochs), making the task
harder step by step. Facts from the authors' code (zhengli97/CTKD: train_student.py,
helper/loops.py, models/temp_global.py; and the LS authors' copy of it):

- global temperature: one parameter theta (initialised to 1); `T = t_start + t_end *
  sigmoid(GRL(theta, lambda))`, t_start 1, t_end 20 (so T starts at ~15.6);
- GRL: identity forward, backward multiplies the gradient by `lambda`;
- lambda per epoch (epochs from 1): cosine `(cos(pi * min(e, L) / L) + 1) / 2 * (max - min)
  + min` with their CIFAR script's max 0, min -1, L 10 epochs (a negative lambda reverses the
  gradient, with strength growing from 0 to 1 by epoch 10); "linear": `-min(e, L-1) *
  (max - min) / L` as their LinearDecay;
- loss = `ce_weight * CE + kd_weight * T^2 * KL(softmax(zt/T) || softmax(zs/T))`, batch
  mean; their CIFAR script: ce 0.1, kd 0.9 (the LS variant: kd 9, `--kd_T 2`); ImageNet:
  ce 1, kd 1, lambda over 5 epochs;
- the module's parameters are in the student's SGD optimizer (same lr, momentum, weight
  decay) and trained in the same step.

Reconstruction: `temperature="instance"` (the paper's instance-wise variant; its module is not
in the public code): a 2-layer MLP (width `hidden`, ReLU) on the concatenated, detached
student and teacher logits gives a per-sample theta, mapped and reversed as above; the loss
is the batch mean of each sample's `T_i^2 * KL_i`. `temperature="fixed"` is plain KD at `T`
(the authors' `--kd_T`, which their learnable modes ignore).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdrun.methods.base import Method
from kdrun.methods.catalog import CTKDParams, CTKDSpec  # noqa: F401  (re-export)
from kdrun.methods.registry import register


class _Reverse(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `lam` (negative: reversed)."""

    @staticmethod
    def forward(ctx, x, lam: float):
        ctx.lam = lam
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.lam, None


def grl(x: torch.Tensor, lam: float) -> torch.Tensor:
    return _Reverse.apply(x, lam)


def grl_lambda(epoch: int, schedule: str, high: float, low: float, loops: int) -> float:
    """The authors' CosineDecay / LinearDecay value for `epoch`."""
    if schedule == "cosine":
        i = min(max(epoch, 0), loops)
        return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (high - low) + low
    i = min(max(epoch, 0), loops - 1)
    return -i * (high - low) / loops


@register
class CTKD(CTKDSpec, Method):
    """KD at a learnable, adversarially trained temperature (see the module docstring)."""

    def __init__(self, params=None, **hparams) -> None:
        super().__init__(params, **hparams)
        p = self.p
        self.theta = nn.Parameter(torch.ones(1)) if p.temperature == "global" else None
        self.mlp: nn.Module | None = None

    def prepare(self, num_classes: int) -> None:
        if self.p.temperature == "instance" and self.mlp is None:
            self.mlp = nn.Sequential(nn.Linear(2 * num_classes, self.p.hidden), nn.ReLU(),
                                     nn.Linear(self.p.hidden, 1))

    def temperature(self, zs: torch.Tensor, zt: torch.Tensor, epoch: int) -> torch.Tensor:
        """`[1]` (global/fixed) or `[B, 1]` (instance) temperatures for this step."""
        p = self.p
        if p.temperature == "fixed":
            return zs.new_full((1,), p.T)
        lam = grl_lambda(epoch, p.grl_schedule, p.grl_max, p.grl_min, p.grl_loops)
        if p.temperature == "global":
            theta = self.theta
        else:
            if self.mlp is None:
                self.prepare(zs.shape[1])
                self.mlp.to(zs.device)  # type: ignore[union-attr]
            theta = self.mlp(torch.cat([zs.detach(), zt.detach()], 1))  # type: ignore[misc]
        return p.t_start + p.t_end * torch.sigmoid(grl(theta, lam))

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        p = self.p
        ce = F.cross_entropy(student_logits, targets)
        T = self.temperature(student_logits, teacher_logits, epoch)
        Tb = T if T.dim() == 2 else T.view(1, 1)
        log_ps = F.log_softmax(student_logits / Tb, 1)
        log_pt = F.log_softmax(teacher_logits / Tb, 1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)  # per sample
        kd = (kl * Tb[:, 0] ** 2).mean()
        loss = p.ce_weight * ce + p.kd_weight * kd
        lam = grl_lambda(epoch, p.grl_schedule, p.grl_max, p.grl_min, p.grl_loops)
        # `reversal`: -lambda, the strength of the reversed gradient (0 -> 1 by default)
        comps = {"ce": ce.detach(), "kd": kd.detach(), "temperature": T.detach().mean(),
                 "reversal": ce.new_full((), -lam if p.temperature != "fixed" else 0.0)}
        return loss, comps
