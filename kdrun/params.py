"""Typed hyperparameters: a dataclass per method/recipe, built from user dicts with checks.

Grids are plain YAML, so every value arrives as int/float/str/bool/list. `build` checks each
key against the dataclass fields and coerces ints to floats where a float is declared, so a
typo or a wrong type fails with the key path and the valid choices instead of deep in training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from kdrun.errors import UserError

T = TypeVar("T")


def field_types(cls: type) -> dict[str, Any]:
    """Each field's resolved type (a fresh dict: callers may change it)."""
    return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    # Resolving string annotations is slow and a grid builds every job's params with it.
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def is_list_type(tp: Any) -> bool:
    """True when a field itself holds a list (so a list value is not a sweep)."""
    if get_origin(tp) in (Union, types.UnionType):
        return any(is_list_type(a) for a in get_args(tp) if a is not type(None))
    return get_origin(tp) in (list, tuple) or tp in (list, tuple)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp` (a small subset of typing is enough for configs)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[-1] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as true/false
        if value not in choices:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (inner,) = get_args(tp)[:1] or (Any,)
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from `values`, rejecting unknown keys and wrong types."""
    values = dict(values or {})
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(types_) or '(none)'}"
        )
    kwargs = {k: coerce(v, types_[k], f"{where}.{k}") for k, v in values.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as dotted keys (`kd.T`), lists as JSON: one flat, printable row."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out
