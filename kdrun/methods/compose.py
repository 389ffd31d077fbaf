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
import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdrun.errors import UserError
from kdrun.methods.base import Method, NoParams
from kdrun.params import as_dict, build, field_types


class Modifier(nn.Module):
    """Transforms logits (student's and teacher's alike) before a base method sees them."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.p = params

    @classmethod
    def base_defaults(cls, base: str, *, dataset: str | None, teacher: str | None = None,
                      student: str | None = None,
                      current: dict[str, Any] | None = None) -> dict[str, Any]:
        """Overrides of the base's defaults when modified (dataset None: class level);
        `current` is the base's class + pair defaults they may be derived from."""
        return {}

    @classmethod
    def base_source(cls, base: str, *, dataset: str | None, teacher: str | None = None,
                    student: str | None = None, current: dict[str, Any] | None = None) -> str:
        """Where `base_defaults` come from, for `kdrun methods` (e.g. a published run)."""
        return f"{cls.name} default"

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AddOnMethod(Method):
    """A method that can also be added to another one (`kd+rkkd`): it must have `ce_weight`,
    which the composition sets to 0 (the base supplies CE)."""

    @classmethod
    def addon_defaults(cls, base: str, base_params: dict[str, Any]) -> dict[str, Any]:
        """Defaults that follow from the base's resolved hyperparameters."""
        return {}


def class_defaults(cls: type[Method]) -> dict[str, Any]:
    """The defaults of `cls.Params` (before pair/dataset defaults)."""
    return as_dict(cls.Params())


@functools.cache
def addon_params(cls: type[Method]) -> type:
    """`cls.Params` without `ce_weight`: what a grid may set for `cls` used as an add-on."""
    types = field_types(cls.Params)  # resolved: the annotations are strings
    fields = [
        (f.name, types[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(cls.Params)
        if f.name != "ce_weight"
    ]
    post_init = getattr(cls.Params, "__post_init__", None)  # keep the value checks
    namespace = {"__post_init__": post_init} if post_init else {}
    return dataclasses.make_dataclass(f"{cls.__name__}AddOnParams", fields, namespace=namespace)


class Composite(Method):
    """One loss module made of a base method, an optional modifier and an optional add-on."""

    base_cls: ClassVar[type[Method]]
    modifier_cls: ClassVar[type[Modifier] | None] = None
    addon_cls: ClassVar[type[Method] | None] = None

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

    @classmethod
    def part_names(cls) -> list[str]:
        return [c.name for c in (cls.base_cls, cls.modifier_cls, cls.addon_cls) if c]

    @classmethod
    def resolve_parts(
        cls,
        hparams: dict[str, Any] | None,
        *,
        teacher: str | None = None,
        student: str = "",
        dataset: str | None = None,
        where: str = "method",
    ) -> dict[str, Any]:
        """Validated Params per part; `dataset=None` (as in `create`) skips pair defaults."""
        where = f"{where}.{cls.name}"
        names = cls.part_names()
        if hparams is None:
            hparams = {}
        if not isinstance(hparams, dict):
            raise UserError(f"{where}: expected a mapping of parts ({', '.join(names)})")
        unknown = sorted(set(hparams) - set(names))
        if unknown:
            raise UserError(
                f"{where}: unknown part {unknown[0]!r}; valid parts: {', '.join(names)} "
                f"(hyperparameters go under their part, e.g. {{{names[0]}: {{...}}}})"
            )
        given: dict[str, dict[str, Any]] = {}
        for n in names:
            v = hparams.get(n)
            if v is not None and not isinstance(v, dict) and not dataclasses.is_dataclass(v):
                raise UserError(f"{where}.{n}: expected a mapping of {n}'s hyperparameters")
            given[n] = as_dict(v) if dataclasses.is_dataclass(v) else dict(v or {})

        def pair(c: type[Method]) -> dict[str, Any]:
            if dataset is None:
                return {}
            return c.defaults(teacher=teacher, student=student, dataset=dataset)

        base, mod, addon = cls.base_cls, cls.modifier_cls, cls.addon_cls
        values = {**pair(base)}
        if mod:
            current = {**class_defaults(base), **values}
            values.update(mod.base_defaults(base.name, dataset=dataset, teacher=teacher,
                                            student=student, current=current))
        values.update(given[base.name])
        out: dict[str, Any] = {base.name: build(base.Params, values, f"{where}.{base.name}")}
        if mod:
            out[mod.name] = build(mod.Params, given[mod.name], f"{where}.{mod.name}")
        if addon:
            params = addon_params(addon)
            keys = {f.name for f in dataclasses.fields(params)}
            values = {k: v for k, v in pair(addon).items() if k in keys}
            if issubclass(addon, AddOnMethod):
                values.update(addon.addon_defaults(base.name, as_dict(out[base.name])))
            values.update(given[addon.name])
            out[addon.name] = build(params, values, f"{where}.{addon.name}")
        return out

    def prepare(self, num_classes: int) -> None:
        self.base.prepare(num_classes)
        if self.addon is not None:
            self.addon.prepare(num_classes)

    @classmethod
    def check(cls, params: dict[str, Any], *, num_classes: int, where: str) -> None:
        for c in (cls.base_cls, cls.addon_cls):
            if c is not None:
                c.check(params[c.name], num_classes=num_classes, where=f"{where}.{cls.name}")

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
    parts = [c for c in (base, modifier, addon) if c]
    params = dataclasses.make_dataclass(
        name.replace("+", "_") + "_params",
        [(c.name, dict, dataclasses.field(default_factory=dict)) for c in parts],
    )
    attrs = {
        "name": name,
        "Params": params,
        "needs_teacher": base.needs_teacher or bool(addon and addon.needs_teacher),
        "teacher_logits_only": all(c.teacher_logits_only for c in (base, addon) if c),
        "views": base.views,
        "base_cls": base,
        "modifier_cls": modifier,
        "addon_cls": addon,
        "__doc__": f"Composed method {name}: " + ", ".join(c.__name__ for c in parts) + ".",
    }
    return type(name.replace("+", "_"), (Composite,), attrs)
