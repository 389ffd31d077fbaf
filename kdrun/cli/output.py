"""Where command output goes: the format a `--out` file's extension asks for, writing files
(missing folders are created; a folder where a file is wanted, or a file system error, is one
line, not a traceback), and `--plot DIR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdrun.errors import UserError

EXTENSIONS = {".tex": "latex", ".md": "markdown", ".markdown": "markdown", ".csv": "csv",
              ".json": "json", ".html": "html", ".htm": "html", ".txt": "table"}


def choose_format(fmt: str | None, out: Path | None, valid: Sequence[str],
                  default: str = "table") -> str:
    """`--format` if given, else the one `--out`'s extension names, else `default`. Refuses a
    `--format` that contradicts the extension (`--out r.tex --format csv`)."""
    by_ext = EXTENSIONS.get(out.suffix.lower()) if out is not None else None
    if by_ext is not None and by_ext not in valid:
        by_ext = None
    if fmt is None:
        return by_ext or default
    if fmt not in valid:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(valid)}")
    if by_ext is not None and out is not None and by_ext != fmt:
        raise UserError(f"--out {out}: a {out.suffix} file holds {by_ext}, not {fmt}; "
                        "drop --format or change the file name")
    return fmt


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path`, creating missing folders; one-line errors."""
    if path.is_dir():
        raise UserError(f"--out {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise UserError(f"--out {path}: cannot write: {e.strerror or e}") from None
    return path


def plot_path(path: Path, table: str) -> Path:
    """`--plot FILE.png` as given; `--plot DIR` (an existing folder, or a name without an
    extension) -> DIR/<table>.png."""
    if path.is_dir() or not path.suffix:
        return path / f"{table}.png"
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot {path}: plots are PNG files; give FILE.png or a folder")
    return path
