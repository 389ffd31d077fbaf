"""The first line of a stored error: its cause, not a wrapper around it.

`kdrun status` shows one line per failed job, so that line must say what went wrong: for an
OS error the reason and the file (`No space left on device: runs/000001-.../train.log`), even
when a library wrapped it (torch reports a full disk as `RuntimeError ... unexpected pos`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def os_error(e: OSError) -> str:
    """`<reason>: <file>` for an OSError (the file as it was named)."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e)) or type(e).__name__
    name = e.filename if e.filename is not None else None
    return f"{reason}: {name}" if name else reason


def root_os_error(e: BaseException) -> OSError | None:
    """The OSError with an errno at the root of an exception chain, if any."""
    seen: set[int] = set()
    cur: BaseException | None = e
    found = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            found = cur
        cur = cur.__cause__ or cur.__context__
    return found


def first_line(text: str | None) -> str:
    """The first non-empty line of a message or a stored error ("" when there is none)."""
    for row in (text or "").splitlines():
        if row.strip():
            return row.strip()
    return ""


def reason(e: BaseException) -> str:
    """The first line of an exception's message (a database error's own, not SQLAlchemy's
    wrapper), or its type when it has none: for messages that quote the reason."""
    return first_line(str(getattr(e, "orig", None) or e)) or type(e).__name__


def line(e: BaseException) -> str:
    """One line naming the cause of `e`."""
    root = root_os_error(e)
    if root is not None:
        return os_error(root)
    first = first_line(str(e))
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def disk_full(where: Path, need: int = 1 << 20) -> bool:
    """Whether the filesystem holding `where` has (almost) no space left: how a write that a
    library reported vaguely is told apart from a real bug."""
    try:
        return shutil.disk_usage(where).free < need
    except OSError:
        return False


def enospc(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
