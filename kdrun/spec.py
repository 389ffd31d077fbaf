"""A job's fully resolved configuration and its identity (the hash of that configuration)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

# Config keys that say where a job reports, not what it computes: not part of its identity.
UNHASHED = ("tracker",)


# Recipe keys added after jobs existed, hashed only when not at their default, so a job
# enqueued before they existed keeps its identity (a 1-GPU job is the job it always was).
HASHED_UNLESS_DEFAULT = {"gpus": 1, "nodes": 1}


# While a grid expands, its jobs share their dataset, recipe and teacher dicts: each is encoded
# once (by identity, holding the object so its id is not reused). Only inside `shared_parts`,
# where those dicts are freshly built and not changed afterwards.
Memo = dict[tuple[str, int], tuple[Any, str]]
_parts: ContextVar[Memo | None] = ContextVar("kdrun_parts", default=None)


@contextmanager
def shared_parts() -> Iterator[None]:
    token = _parts.set({})
    try:
        yield
    finally:
        _parts.reset(token)


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _hashed_recipe(recipe: Any) -> Any:
    if isinstance(recipe, dict) and any(k in recipe for k in HASHED_UNLESS_DEFAULT):
        return {k: v for k, v in recipe.items()
                if k not in HASHED_UNLESS_DEFAULT or HASHED_UNLESS_DEFAULT[k] != v}
    return recipe


def _part(key: str, value: Any, memo: Memo | None) -> str:
    if memo is None or not isinstance(value, (dict, list)):
        return _canonical(_hashed_recipe(value) if key == "recipe" else value)
    hit = memo.get((key, id(value)))
    if hit is None:  # the memo holds the value, so no other object takes its id meanwhile
        hit = memo[key, id(value)] = (value, _part(key, value, None))
    return hit[1]


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config (sorted keys, no spaces; the recipe
    without the keys at their HASHED_UNLESS_DEFAULT value): equal configs -> one job. Built
    key by key, byte for byte what json.dumps(sort_keys=True) gives for the whole dict."""
    memo = _parts.get()
    blob = "{" + ",".join(f"{_canonical(k)}:{_part(k, config[k], memo)}"
                          for k in sorted(config) if k not in UNHASHED) + "}"
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class JobSpec:
    """One job before it is in the database. `depends_on` is the hash of its teacher's job."""

    kind: str  # "teacher" or "student"
    config: dict[str, Any]
    depends_on: str | None = None
    priority: int = 0
    label: str | None = field(default=None, compare=False)  # kdrun.labels.assign, at enqueue
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.hash = config_hash(self.config)

    @property
    def dataset(self) -> str:
        return self.config["dataset"]["name"]

    @property
    def student(self) -> str:
        return self.config["student"]

    @property
    def teacher(self) -> str | None:
        t = self.config.get("teacher")
        return t["name"] if t else None

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def gpus(self) -> int:
        """Devices the job trains on at once (its DDP world size; recipe.gpus)."""
        return int(self.config.get("recipe", {}).get("gpus", 1))

    @property
    def nodes(self) -> int:
        """Machines its ranks spread over (recipe.nodes)."""
        return int(self.config.get("recipe", {}).get("nodes", 1))
