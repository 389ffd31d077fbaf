"""Method registry: names as written in a grid -> method specs and loss classes (timm-style).

Besides the registered names, composed names `<method>[+<modifier>][+<add-on>]` (`kd+ls`,
`kd+rkkd`, `dkd+ls+rkkd`) resolve to a class built on first use; see `compose.py`.

Two tables: the specs (kdrun.methods.catalog: names, hyperparameters, defaults; no torch),
which validate and resolve a grid's methods, and the loss classes (`get`, `create`), whose
modules import torch and are loaded only when a loss is wanted.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from kdrun.errors import UserError
from kdrun.methods import catalog
from kdrun.methods.catalog import CompositeSpec, MethodSpec, ModifierSpec
from kdrun.params import as_dict, build

if TYPE_CHECKING:
    from kdrun.methods.base import Method

# specs by name (what grids see)
_METHODS: dict[str, type[MethodSpec]] = {c.name: c for c in catalog.METHODS}
_MODIFIERS: dict[str, type[ModifierSpec]] = {c.name: c for c in catalog.MODIFIERS}
_COMPOSED: dict[str, type[CompositeSpec]] = {}
# loss classes by name (what trainers get): filled as their modules register them
_LOSSES: dict[str, type] = {}
_LOSS_COMPOSED: dict[str, type] = {}
GRAMMAR = "<method>[+<modifier>][+<add-on>]"


def register(cls: type) -> type:
    """Class decorator for a Method or a Modifier: its loss class. kdrun's own subclass their
    spec in kdrun.methods.catalog (so grids need no torch); a class registered under a new
    name (a plugin) is its own spec, known once its module is imported."""
    if not cls.name or "+" in cls.name or cls.name in _LOSSES:
        raise ValueError(f"method name {cls.name!r} is empty, has '+' or is already registered")
    spec = _MODIFIERS.get(cls.name) or _METHODS.get(cls.name)
    if spec is None:
        table: dict[str, Any] = _MODIFIERS if issubclass(cls, ModifierSpec) else _METHODS
        table[cls.name] = spec = cls
    if not issubclass(cls, spec):
        raise ValueError(f"method {cls.name!r} must subclass its spec {spec.__name__} "
                         "(kdrun.methods.catalog)")
    _LOSSES[cls.name] = cls
    return cls


def _bases() -> list[str]:
    """Methods that can carry a modifier or an add-on: distillation losses with a CE weight."""
    return sorted(
        n
        for n, c in _METHODS.items()
        if c.needs_teacher and "ce_weight" in {f.name for f in dataclasses.fields(c.Params)}
    )


def _addons() -> list[str]:
    return sorted(n for n, c in _METHODS.items() if issubclass(c, catalog.AddOnSpec))


def _composed_names() -> list[str]:
    names = []
    for base in _bases():
        for mod in [None, *sorted(_MODIFIERS)]:
            for addon in [None, *_addons()]:
                if addon != base and (mod or addon):
                    names.append("+".join(p for p in (base, mod, addon) if p))
    return sorted(names)


def available() -> list[str]:
    """Registered methods, then every valid composition."""
    return sorted(_METHODS) + _composed_names()


def _grammar_help() -> str:
    return (
        f"a composed method is {GRAMMAR} with methods: {', '.join(_bases())}; "
        f"modifiers: {', '.join(sorted(_MODIFIERS))}; add-ons: {', '.join(_addons())}"
    )


def _parts(name: str) -> tuple[str, str | None, str | None]:
    """(base, modifier, add-on) of a composed name, or a UserError naming the grammar."""
    base, *rest = name.split("+")
    if base not in _bases():
        raise UserError(f"unknown method {name!r}: {base!r} cannot be a base; {_grammar_help()}")
    mod = rest.pop(0) if rest and rest[0] in _MODIFIERS else None
    addon = None
    if rest and rest[0] in _addons() and rest[0] != base:
        addon = rest.pop(0)
    if rest:
        raise UserError(f"unknown method {name!r}: unexpected {rest[0]!r}; {_grammar_help()}")
    return base, mod, addon


def spec(name: str) -> type[MethodSpec]:
    """The spec of a method or composition: hyperparameters, defaults, checks (no torch)."""
    if "+" in name:
        if name not in _COMPOSED:
            base, mod, addon = _parts(name)
            _COMPOSED[name] = catalog.make_spec(
                name, _METHODS[base], _MODIFIERS[mod] if mod else None,
                _METHODS[addon] if addon else None)
        return _COMPOSED[name]
    if name in _MODIFIERS:
        raise UserError(f"{name!r} modifies another method: use it as e.g. 'kd+{name}'")
    try:
        return _METHODS[name]
    except KeyError:
        raise UserError(
            f"unknown method {name!r}; valid methods: {', '.join(available())}"
        ) from None


def _loss(name: str) -> type:
    """The loss class of a registered (not composed) name, importing its module."""
    if name not in _LOSSES:
        importlib.import_module(f"kdrun.methods.{catalog.MODULES[name]}")
    return _LOSSES[name]


def get(name: str) -> type[Method]:
    """The loss class (an nn.Module) of a method or composition; imports torch."""
    s = spec(name)  # unknown names: the same errors as a grid gets
    if not issubclass(s, CompositeSpec):
        return _loss(name)
    if name not in _LOSS_COMPOSED:
        from kdrun.methods.compose import make_composite

        base, mod, addon = (c and _loss(c.name) for c in (s.base_cls, s.modifier_cls,
                                                          s.addon_cls))
        _LOSS_COMPOSED[name] = make_composite(name, base, mod, addon)
    return _LOSS_COMPOSED[name]


def resolve(
    name: str,
    hparams: dict[str, Any] | None,
    *,
    teacher: str | None,
    student: str,
    dataset: str,
    where: str = "method",
) -> dict[str, Any]:
    """Full hyperparameters of a job: class defaults < pair/dataset defaults < grid values.

    For a composed name the result is nested per part: `{"kd": {...}, "rkkd": {...}}`.
    """
    cls = spec(name)
    if issubclass(cls, CompositeSpec):
        parts = cls.resolve_parts(
            hparams, teacher=teacher, student=student, dataset=dataset, where=where
        )
        return {part: as_dict(p) for part, p in parts.items()}
    values = {**cls.defaults(teacher=teacher, student=student, dataset=dataset), **(hparams or {})}
    return as_dict(build(cls.Params, values, f"{where}.{name}"))


def check(name: str, params: dict[str, Any], *, num_classes: int, where: str = "method") -> None:
    """Raise UserError when resolved hyperparameters do not fit a dataset of `num_classes`."""
    spec(name).check(params, num_classes=num_classes, where=where)


def needs_teacher(name: str) -> bool:
    return spec(name).needs_teacher


def create(name: str, **hparams: Any) -> Method:
    """A ready loss module, e.g. `create("kd", T=4)` or `create("kd+rkkd", kd={"T": 4})`;
    usable in any training loop."""
    cls = get(name)
    if issubclass(cls, CompositeSpec):
        return cls(**hparams)
    return cls(build(cls.Params, hparams, name))
