"""The distillation-method interface, shaped after mdistiller's distillers.

A method is a loss module: it sees the student's and the (detached) teacher's logits, the
labels and the epoch, and returns the total loss plus its named components, which the
trainer logs per epoch. Hyperparameters live in a dataclass `Params` so grids are validated
against the field names and types before anything is queued.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdrun.methods.catalog import MethodSpec, NoParams  # noqa: F401  (NoParams: re-export)
from kdrun.params import build

Components = dict[str, torch.Tensor]


class Method(MethodSpec, nn.Module):
    """A loss module. Its name, Params, defaults and flags come from its spec
    (kdrun.methods.catalog), which grids use without torch:
    - needs_teacher; teacher_logits_only: the loss sees nothing of the teacher but its logits,
      so cached logits can stand in for the teacher's forward (kdrun.train.teacher_cache);
      False for feature-based methods."""

    # views: augmented views of each image the loss needs, in order. More than one (mlkd: weak and
    # strong): the loader yields one batch per view (kdrun.data.views), the student and the
    # teacher run on each, and the loss gets each side's logits stacked along the batch
    # ([view 0; view 1; ...], targets repeated). Such a method must not use the teacher-logit
    # cache, which holds crop+flip views only: set teacher_logits_only False.
    # applies_modifier: the base applies a modifier (`+ls`) itself, to the terms its authors
    # apply it to, via `self.modifier` (set by the composition); otherwise the composition
    # transforms the logits before the base sees them.
    # A method may own trainable parameters (ctkd's temperature module): every parameter of
    # the loss module joins the student's optimizer (same group and settings, as the authors'
    # code does) and its state_dict is saved in the training checkpoint, so resume is exact.

    def __init__(self, params: Any = None, **hparams: Any) -> None:
        super().__init__()
        self.p = params if params is not None else build(self.Params, hparams, self.name)
        self.modifier: nn.Module | None = None  # see applies_modifier

    def prepare(self, num_classes: int) -> None:
        """Build what depends on the class count (ctkd's instance-wise module) before the
        trainer creates the optimizer."""

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        targets: torch.Tensor,
        epoch: int = 0,
    ) -> tuple[torch.Tensor, Components]:
        raise NotImplementedError
