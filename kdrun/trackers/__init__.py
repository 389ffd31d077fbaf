"""Experiment trackers: each job's per-epoch metrics in TensorBoard and/or Weights & Biases.

A grid asks for them with `recipe: {tracker: [tensorboard, wandb]}`, a worker with
`--tracker tensorboard,wandb`; a job logs to the union. Both are optional extras, so this
module only names and checks them (no import of tensorboard, wandb or torch here: `enqueue`
and the worker's start use it). The logging itself is `kdrun.trackers.hook.TrackerSet`,
called from the training process's epoch hook; the run ids live in the database
(`kdrun.trackers.store`) so a resumed job continues the same tracker run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from kdrun.errors import UserError

# tracker name -> (module that must be importable, the pip extra that brings it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
}


def installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


def parse(value: Any, where: str, check_installed: bool = True) -> list[str]:
    """`tensorboard`, `[tensorboard, wandb]` or `"tensorboard,wandb"` as a list of tracker
    names; an unknown name, or one not installed here, is a one-line UserError."""
    if value is None or value == []:
        return []
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise UserError(f"{where}: expected a list of tracker names "
                        f"({', '.join(TRACKERS)}), got {value!r}")
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise UserError(f"{where}: unknown tracker {bad[0]!r}; valid trackers are "
                        f"{', '.join(TRACKERS)}")
    names = list(dict.fromkeys(names))
    if check_installed:
        require(names, where)
    return names


def require(names: Iterable[str], where: str) -> None:
    for n in names:
        if not installed(n):
            raise UserError(f"{where}: tracker {n!r} is not installed here; "
                            f"pip install 'kdrun[{TRACKERS[n][1]}]'")


def union(*lists: Iterable[str] | None) -> list[str]:
    return list(dict.fromkeys(n for names in lists for n in (names or ())))
