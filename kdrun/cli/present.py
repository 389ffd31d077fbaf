"""Small pieces of text shared by `status`, `worker`, `show` and `logs`: blocked jobs, ages,
and log lines that stay whole when output goes to a file."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

from rich.console import Console

from kdrun.db.queue import Blocker

_TAGS = re.compile(r"\[(?:/|/?(?:bold|dim|red|green|yellow)(?: [a-z]+)?)\]")


def plain(message: str) -> str:
    """A log message without kdrun's colour tags (other brackets, e.g. in a traceback, stay)."""
    return _TAGS.sub("", message)


def stamp(t: float | None = None) -> str:
    """Local time as `2026-12-01 07:02:13`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def log_printer(console: Console) -> Callable[[str], None]:
    """Coloured lines on a terminal; on a pipe or file, one timestamped plain line per
    message, never wrapped (so `grep` and `tail -f` see whole lines)."""
    if console.is_terminal:
        return lambda message: console.print(message, soft_wrap=True, highlight=False)

    def log(message: str) -> None:
        text = plain(message)
        print(f"{stamp()} {text}", file=console.file or sys.stdout, flush=True)

    return log


def blocked_line(b: Blocker, count: bool = True) -> str:
    """`36 queued job(s) blocked by job 1 (resnet14 vanilla s0), failed: CIFAR-100 ...`."""
    why = f"failed: {b.error}" if b.state == "failed" else "cancelled"
    return ((f"{len(b.blocked)} queued job(s) " if count else "")
            + f"blocked by job {b.job_id} ({b.label}), {why}")


def stranded(blockers: list[Blocker]) -> str:
    """Why a `--until-empty` worker leaves queued jobs behind, and what to do."""
    n = sum(len(b.blocked) for b in blockers)
    ids = " ".join(str(b.job_id) for b in blockers)
    why = ("; ".join(blocked_line(b) for b in blockers) if len(blockers) > 1
           else blocked_line(blockers[0], count=False))
    return (f"{n} queued job(s) can never run: {why}. Fix the cause, then "
            f"`kdrun retry {ids}`")


def age(seconds: float, interval: float | None) -> str:
    """A heartbeat's age against its renewal interval (a quarter of the lease): `71s/75s` is
    on time; `LATE 3m05s/75s` once no renewal came for 1.5 intervals (plus 5 s of slack)."""
    s = max(0, int(seconds))
    text = f"{s}s" if s < 120 else f"{s // 60}m{s % 60:02d}s"
    if not interval:
        return text
    text += f"/{interval:.0f}s"
    return f"LATE {text}" if seconds > 1.5 * interval + 5 else text
