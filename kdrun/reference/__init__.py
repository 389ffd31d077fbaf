"""Published results shipped with kdrun, so reports can show the paper's number beside ours.

The numbers live in `published_results.yaml` next to this file (package data); every lookup
returns the value together with its source and that source's protocol (best or last epoch,
runs averaged), because the literature mixes them and a report must say which it compares to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Published:
    """One published top-1 number (%), with `std` when the source gives one."""

    mean: float
    std: float | None
    source: str | None  # key into `sources()`, None when the reference names no source


@functools.cache
def data() -> dict[str, Any]:
    text = (resources.files("kdrun") / "reference" / "published_results.yaml").read_text()
    return yaml.safe_load(text)


def sources() -> dict[str, dict[str, str]]:
    """Source key -> {citation, protocol}."""
    return data()["sources"]


def _value(raw: Any, source: str | None) -> Published:
    if isinstance(raw, dict):
        return Published(float(raw["mean"]), float(raw["std"]), source)
    return Published(float(raw), None, source)


def _block(dataset: str, *path: str) -> dict[str, Any] | None:
    node: Any = data().get(dataset)
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def method(dataset: str, name: str, teacher: str, student: str) -> Published | None:
    """Published top-1 of `name` distilling architecture `teacher` into `student`."""
    block = _block(dataset, "methods", name)
    if block is None or f"{teacher}->{student}" not in block["top1"]:
        return None
    return _value(block["top1"][f"{teacher}->{student}"], block.get("source"))


def standalone(dataset: str, role: str, arch: str) -> Published | None:
    """Published top-1 of `arch` trained alone; role is "teachers" or "students"."""
    block = _block(dataset, role)
    if block is None or arch not in block["top1"]:
        return None
    return _value(block["top1"][arch], block.get("source"))


def ladder(dataset: str, student: str, name: str) -> dict[str, Published]:
    """Diminishing-returns study: teacher arch -> published student top-1 for `name`
    ("teachers" gives the teachers' own top-1 in that study). Empty when unpublished."""
    block = (data().get("diminishing_returns") or {}).get(dataset)
    if not block:
        return {}
    row = block["students"].get(student, {}).get(name, {})
    return {t: _value(v, block.get("source")) for t, v in row.items()}


def cite(source: str | None) -> str:
    """`key: protocol` for a report note, or a plain statement that no source is named."""
    if source is None:
        return "source not named in kdrun's reference data"
    s = sources()[source]
    return f"{source} ({s['protocol']}): {s['citation']}"
