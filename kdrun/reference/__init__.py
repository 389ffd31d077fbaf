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
    # Set by the report (kdrun.report.paper) when a cell's jobs ran with hyperparameters other
    # than the published run's: the number is then not shown as a comparison.
    settings_differ: bool = False


@functools.cache
def data() -> dict[str, Any]:
    text = (resources.files("kdrun") / "reference" / "published_results.yaml").read_text()
    return yaml.safe_load(text)


def sources() -> dict[str, dict[str, str]]:
    """Source key -> {citation, protocol}."""
    return data()["sources"]


def _value(raw: Any, source: str | None) -> Published:
    """A number, or {mean[, std][, source]} (a value's own source overrides its block's)."""
    if isinstance(raw, dict):
        std = raw.get("std")
        return Published(float(raw["mean"]), None if std is None else float(std),
                         raw.get("source", source))
    return Published(float(raw), None, source)


@functools.cache
def _lskd_rows(key: str) -> dict[str, float]:
    """`teacher->student` -> best top-1 of the LS authors' logged `key` runs."""
    text = (resources.files("kdrun") / "reference" / "lskd_settings.yaml").read_text()
    return {f"{r['teacher']}->{r['student']}": float(r["best_acc"])
            for r in yaml.safe_load(text)[key]}


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
    if block is None:
        return None
    rows = _lskd_rows(block["from_settings"]) if "from_settings" in block else block["top1"]
    if f"{teacher}->{student}" not in rows:
        return None
    return _value(rows[f"{teacher}->{student}"], block.get("source"))


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
