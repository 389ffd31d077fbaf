"""Modules imported on first use, so light commands stay light.

`kdrun --help`, `status`, `report` and `export` must not pay for torch or pandas (seconds and
most of a gigabyte): a module that needs a heavy module only inside its functions binds it
with `lazy("kdrun.report.export")`, a stand-in that imports the real module at the first
attribute access (the registries a grid expands with are torch-free catalogs; they load with
the grid, not with the CLI). The stand-in is never put in `sys.modules` (torch walks
`sys.modules` while it imports itself; a lazily loading module there would import torch in
the middle of that).
tests/test_light_imports.py guards the result.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Lazy:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        # kept once loaded: a grid of 100k jobs asks the registries a few times per job
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> ModuleType:
    """A stand-in for the module `name` that imports it when one of its attributes is used."""
    return _Lazy(name)  # type: ignore[return-value]
