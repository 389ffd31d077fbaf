"""How `--help` names option values: `TEXT`, `PATH`, `INTEGER` (or the option's metavar), and
nothing for on/off flags, instead of Typer's `<str>` / `<bool>` placeholders.

Typer builds its option objects itself, so the one hook is its `display_type_rich`; patched
once, on import of the CLI.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE",
          "directory": "DIR", "list[str]": "TEXT...", "list[int]": "INTEGER..."}


def _label(param: Any, ctx: Any, original: Any) -> str | None:
    if getattr(param, "is_bool_flag", False) or getattr(param, "count", False):
        return None
    if param.metavar:
        return param.metavar
    shown = original(param, ctx)
    if shown is None:
        return None
    inner = shown[1:-1] if shown.startswith("<") and shown.endswith(">") else shown
    return _NAMES.get(inner, inner.upper())


def install() -> None:
    for cls in (TyperOption, TyperArgument):
        original = cls.display_type_rich
        if getattr(original, "_kdrun", False):
            continue

        def display_type_rich(self: Any, ctx: Any, _orig: Any = original) -> str | None:
            return _label(self, ctx, _orig)

        display_type_rich._kdrun = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[method-assign]
