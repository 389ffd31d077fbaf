"""Where each resolved hyperparameter comes from: `kdrun methods NAME --pair T S`.

Walks the same layers as `registry.resolve` / `Composite.resolve_parts`, lowest first, and
tags each value with the last layer that set it: the method's class default, its pair or
dataset default (e.g. DKD's per-pair beta), a modifier's override (LS: published for this
pair, or the LS default), a default derived from the base (an add-on's weight), the grid.
The values themselves are `resolve`'s, so what is shown is what a job would run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdrun.methods.compose import AddOnMethod, Composite, addon_params, class_defaults
from kdrun.methods.registry import get, resolve
from kdrun.params import as_dict


def _where(dataset: str | None, teacher: str | None, student: str) -> str:
    return f"{dataset}, {teacher}->{student}"


def _layers(name: str, hparams: dict[str, Any] | None, *, teacher: str | None, student: str,
            dataset: str) -> dict[str, dict[str, str]]:
    """part -> key -> source."""
    cls = get(name)
    hparams = hparams or {}
    pair_src = f"method default for {_where(dataset, teacher, student)}"
    if not issubclass(cls, Composite):
        src = {k: "method default" for k in class_defaults(cls)}
        src.update({k: pair_src for k in cls.defaults(teacher=teacher, student=student,
                                                       dataset=dataset)})
        src.update({k: "grid" for k in hparams})
        return {name: src}
    out: dict[str, dict[str, str]] = {}
    base, mod, addon = cls.base_cls, cls.modifier_cls, cls.addon_cls
    pair = base.defaults(teacher=teacher, student=student, dataset=dataset)
    src = {k: "method default" for k in class_defaults(base)}
    src.update({k: pair_src for k in pair})
    if mod:
        current = {**class_defaults(base), **pair}
        kw = dict(dataset=dataset, teacher=teacher, student=student, current=current)
        over = mod.base_defaults(base.name, **kw)
        src.update({k: mod.base_source(base.name, **kw) for k in over})
    src.update({k: "grid" for k in hparams.get(base.name) or {}})
    out[base.name] = src
    if mod:
        msrc = {k: "method default" for k in class_defaults(mod)}
        msrc.update({k: "grid" for k in hparams.get(mod.name) or {}})
        out[mod.name] = msrc
    if addon:
        keys = {f.name for f in dataclasses.fields(addon_params(addon))}
        asrc = {k: "method default" for k in keys}
        asrc.update({k: pair_src for k in addon.defaults(teacher=teacher, student=student,
                                                          dataset=dataset) if k in keys})
        if issubclass(addon, AddOnMethod):
            base_vals = resolve(name, hparams, teacher=teacher, student=student,
                                dataset=dataset)[base.name]
            derived = addon.addon_defaults(base.name, base_vals)
            asrc.update({k: f"derived from {base.name} (rkkd: = the base's kd_weight)"
                         for k in derived})
        asrc.update({k: "grid" for k in hparams.get(addon.name) or {}})
        out[addon.name] = asrc
    return out


def explain(name: str, hparams: dict[str, Any] | None = None, *, teacher: str | None,
            student: str, dataset: str) -> list[dict[str, Any]]:
    """One row per hyperparameter: part, key, value (as a job resolves it), source."""
    values = resolve(name, hparams, teacher=teacher, student=student, dataset=dataset)
    sources = _layers(name, hparams, teacher=teacher, student=student, dataset=dataset)
    if not issubclass(get(name), Composite):
        values = {name: values}
    rows = []
    for part, vals in values.items():
        for key, value in (as_dict(vals) if dataclasses.is_dataclass(vals) else vals).items():
            rows.append({"part": part, "key": key, "value": value,
                         "source": sources.get(part, {}).get(key, "method default")})
    return rows
