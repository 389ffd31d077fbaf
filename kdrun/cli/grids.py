"""`kdrun grids` (the grids shipped with kdrun) and `kdrun init NAME [DEST]` (copy one to edit)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import typer

from kdrun.cli.app import app, console
from kdrun.errors import UserError


def _summary(text: str, width: int = 66) -> str:
    """The first sentence of the grid's leading comment, at most `width` characters."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    out = ""
    for w in words:
        if len(out) + len(w) + 1 > width:
            return out + " ..."
        out = f"{out} {w}".strip()
        if w.endswith("."):
            return out.rstrip(".")
    return out


def _text(name: str) -> str:
    return (resources.files("kdrun") / "grids" / f"{name}.yaml").read_text()


@app.command("grids")
def grids() -> None:
    """List the grids shipped with kdrun (use a name with --grid, or copy one with init)."""
    from kdrun.grid import shipped_grids  # kdrun.grid is heavy: only when asked

    names = shipped_grids()
    width = max(map(len, names))
    for name in names:
        console.print(f"{name:<{width}}  {_summary(_text(name))}", highlight=False,
                      soft_wrap=True)
    console.print("enqueue one with `kdrun enqueue --grid NAME`; copy one to edit with "
                  "`kdrun init NAME [DEST]`", style="dim", soft_wrap=True)


@app.command("init")
def init(
    name: str = typer.Argument(..., help="A shipped grid (see `kdrun grids`)"),
    dest: str = typer.Argument(None, help="File or folder to write (default: ./NAME.yaml)"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file"),
) -> None:
    """Copy a shipped grid to a file of your own, to edit and enqueue."""
    from kdrun.grid import shipped_grids

    names = shipped_grids()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in names:
        raise UserError(f"no shipped grid {name!r}; shipped grids: {', '.join(names)}")
    target = Path(dest) if dest else Path(f"{stem}.yaml")
    if target.is_dir() or (dest or "").endswith(("/", os.sep)):
        target = target / f"{stem}.yaml"
    if target.exists() and not force:
        raise UserError(f"{target} exists; add --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_text(stem))
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None
    console.print(f"wrote {target}; edit it, then `kdrun enqueue --grid {target} --dry-run`",
                  highlight=False, soft_wrap=True)
