"""Modules imported on first use, so light commands stay light.

`kdrun --help`, `status`, `report` and `export` must not pay for torch (seconds and most of a
gigabyte): a module that needs a heavy registry only inside its functions (the grid needs the
method, model and dataset registries to expand a grid, not to be imported) binds it with
`lazy("kdrun.methods")`, a stand-in that imports the real module at the first attribute
access. The stand-in is never put in `sys.modules` (torch walks `sys.modules` while it imports
itself; a lazily loading module there would import torch in the middle of that).
tests/test_light_imports.py guards the result.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Lazy:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> ModuleType:
    """A stand-in for the module `name` that imports it when one of its attributes is used."""
    return _Lazy(name)  # type: ignore[return-value]
