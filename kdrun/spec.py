"""A job's fully resolved configuration and its identity (the hash of that configuration)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Config keys that say where a job reports, not what it computes: not part of its identity.
UNHASHED = ("tracker",)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config: equal configs -> one job."""
    config = {k: v for k, v in config.items() if k not in UNHASHED}
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
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
