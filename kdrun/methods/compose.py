"""Composed methods: `<method>[+<modifier>][+<add-on>]`, e.g. `kd+ls`, `kd+rkkd`, `dkd+ls+rkkd`.

- the **base** method (kd, dkd, dist, cakd, cmkd, rkkd) supplies the cross-entropy, computed
  once on the raw student logits with the base's `ce_weight`;
- a **modifier** (ls) transforms both logits before the base's distillation terms only (as the
  LS authors' code does: CE stays on raw logits), and may override the base's defaults
  (`kd+ls`, `dkd+ls`, ... resolve the LS authors' per-pair settings, kdrun.methods.published).
  A base with `applies_modifier` (mlkd) gets the modifier and applies it to the terms its
  authors apply it to;
- an **add-on** (rkkd, cmkd) adds its own distillation terms on the raw logits. Its
  hyperparameters are its Params without `ce_weight`, so a grid cannot give it a second CE.
  Its weight defaults from the base (`rkkd.weight` = the base's `kd_weight`, so `kd+ls+rkkd`
  weighs the ranking term 9 like the KL it accompanies, as the RKKD paper ties the ranking
  weight to the KL weight; bases without `kd_weight` -- dkd, dist, cakd, cmkd -- give 1).
  On a two-view base (mlkd) it sees both views' logits, stacked.

In a grid, hyperparameters are given per part: `{kd+rkkd: {kd: {T: 4}, rkkd: {k: 100}}}`.
Defaults, lowest first: each part's class defaults < its pair/dataset defaults < the
modifier's overrides of the base < the add-on's defaults derived from the base < grid values.
Components: the base's names, and the add-on's prefixed with its name (`rkkd_rank`), so parts
never collide.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdrun.methods.base import Method
from kdrun.methods.catalog import (  # noqa: F401  (class_defaults, addon_params: re-exports)
    AddOnSpec,
    CompositeSpec,
    ModifierSpec,
    addon_params,
    class_defaults,
    composite_attrs,
)
from kdrun.params import as_dict


class Modifier(ModifierSpec, nn.Module):
    """Transforms logits (student's and teacher's alike) before a base method sees them;
    name, Params and the base's defaults come from its spec (kdrun.methods.catalog)."""

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.p = params

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AddOnMethod(AddOnSpec, Method):
    """A method that can also be added to another one (`kd+rkkd`): it must have `ce_weight`,
    which the composition sets to 0 (the base supplies CE)."""


class Composite(CompositeSpec, Method):
    """One loss module made of a base method, an optional modifier and an optional add-on
    (their loss classes; how the parts resolve: kdrun.methods.catalog.CompositeSpec)."""

    def __init__(self, params: Any = None, **hparams: Any) -> None:
        nn.Module.__init__(self)
        if dataclasses.is_dataclass(params):
            params = as_dict(params)
        parts = self.resolve_parts(hparams if params is None else params)
        self.p = self.Params(**{n: as_dict(v) for n, v in parts.items()})
        base = self.base_cls
        self.ce_weight = parts[base.name].ce_weight
        self.base = base(dataclasses.replace(parts[base.name], ce_weight=0.0))
        mod, addon = self.modifier_cls, self.addon_cls
        self.modifier = mod(parts[mod.name]) if mod else None
        if self.modifier is not None and base.applies_modifier:
            self.base.modifier = self.modifier  # the base applies it to its authors' terms
        self.addon = None
        if addon:
            self.addon = addon(addon.Params(**as_dict(parts[addon.name]), ce_weight=0.0))

    def prepare(self, num_classes: int) -> None:
        self.base.prepare(num_classes)
        if self.addon is not None:
            self.addon.prepare(num_classes)

    def forward(self, student_logits, teacher_logits, targets, epoch=0):
        # Views are stacked along the batch (Method.views): CE is summed over views.
        ce = F.cross_entropy(student_logits, targets) * len(self.base_cls.views)
        zs, zt = student_logits, teacher_logits
        if self.modifier is not None and not self.base_cls.applies_modifier:
            zs, zt = self.modifier(zs), self.modifier(zt)
        loss, comps = self.base(zs, zt, targets, epoch)  # its own CE has weight 0
        loss = loss + self.ce_weight * ce
        comps = {**comps, "ce": ce.detach()}
        if self.addon is not None:
            extra, extra_comps = self.addon(student_logits, teacher_logits, targets, epoch)
            loss = loss + extra
            prefix = self.addon_cls.name
            comps.update({f"{prefix}_{k}": v for k, v in extra_comps.items() if k != "ce"})
        return loss, comps


def make_composite(
    name: str,
    base: type[Method],
    modifier: type[Modifier] | None,
    addon: type[Method] | None,
) -> type[Composite]:
    return type(name.replace("+", "_"), (Composite,),
                composite_attrs(name, base, modifier, addon))
