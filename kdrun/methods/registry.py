"""Method registry: names as written in a grid -> method classes (timm-style).

Besides the registered names, composed names `<method>[+<modifier>][+<add-on>]` (`kd+ls`,
`kd+rkkd`, `dkd+ls+rkkd`) resolve to a class built on first use; see `compose.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdrun.errors import UserError
from kdrun.methods.base import Method
from kdrun.methods.compose import AddOnMethod, Composite, Modifier, make_composite
from kdrun.params import as_dict, build

_METHODS: dict[str, type[Method]] = {}
_MODIFIERS: dict[str, type[Modifier]] = {}
_COMPOSED: dict[str, type[Composite]] = {}
GRAMMAR = "<method>[+<modifier>][+<add-on>]"


def register(cls: type) -> type:
    """Class decorator for a Method or a Modifier."""
    table: dict[str, Any] = _MODIFIERS if issubclass(cls, Modifier) else _METHODS
    if not cls.name or "+" in cls.name or cls.name in _METHODS or cls.name in _MODIFIERS:
        raise ValueError(f"method name {cls.name!r} is empty, has '+' or is already registered")
    table[cls.name] = cls
    return cls


def _bases() -> list[str]:
    """Methods that can carry a modifier or an add-on: distillation losses with a CE weight."""
    return sorted(
        n
        for n, c in _METHODS.items()
        if c.needs_teacher and "ce_weight" in {f.name for f in dataclasses.fields(c.Params)}
    )


def _addons() -> list[str]:
    return sorted(n for n, c in _METHODS.items() if issubclass(c, AddOnMethod))


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


def _compose(name: str) -> type[Composite]:
    if name in _COMPOSED:
        return _COMPOSED[name]
    base, *rest = name.split("+")
    if base not in _bases():
        raise UserError(f"unknown method {name!r}: {base!r} cannot be a base; {_grammar_help()}")
    mod = _MODIFIERS[rest.pop(0)] if rest and rest[0] in _MODIFIERS else None
    addon = None
    if rest and rest[0] in _addons() and rest[0] != base:
        addon = _METHODS[rest.pop(0)]
    if rest:
        raise UserError(f"unknown method {name!r}: unexpected {rest[0]!r}; {_grammar_help()}")
    _COMPOSED[name] = make_composite(name, _METHODS[base], mod, addon)
    return _COMPOSED[name]


def get(name: str) -> type[Method]:
    if "+" in name:
        return _compose(name)
    if name in _MODIFIERS:
        raise UserError(f"{name!r} modifies another method: use it as e.g. 'kd+{name}'")
    try:
        return _METHODS[name]
    except KeyError:
        raise UserError(
            f"unknown method {name!r}; valid methods: {', '.join(available())}"
        ) from None



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
    cls = get(name)
    if issubclass(cls, Composite):
        parts = cls.resolve_parts(
            hparams, teacher=teacher, student=student, dataset=dataset, where=where
        )
        return {part: as_dict(p) for part, p in parts.items()}
    values = {**cls.defaults(teacher=teacher, student=student, dataset=dataset), **(hparams or {})}
    return as_dict(build(cls.Params, values, f"{where}.{name}"))


def check(name: str, params: dict[str, Any], *, num_classes: int, where: str = "method") -> None:
    """Raise UserError when resolved hyperparameters do not fit a dataset of `num_classes`."""
    get(name).check(params, num_classes=num_classes, where=where)


def needs_teacher(name: str) -> bool:
    return get(name).needs_teacher


def create(name: str, **hparams: Any) -> Method:
    """A ready loss module, e.g. `create("kd", T=4)` or `create("kd+rkkd", kd={"T": 4})`;
    usable in any training loop."""
    cls = get(name)
    if issubclass(cls, Composite):
        return cls(**hparams)
    return cls(build(cls.Params, hparams, name))
