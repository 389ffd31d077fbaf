"""Workers: claim jobs from the queue and train each in a supervised child process.

The names below load on first use (PEP 562): the training process, `kdrun.worker.child`,
lives in this package and must not import the supervisor's database and tracker code.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"FailureBreaker": "loop", "Summary": "loop", "WorkerOptions": "loop", "work": "loop",
          "Outcome": "supervisor", "Slot": "supervisor", "run_dir_name": "supervisor"}

__all__ = ["FailureBreaker", "Outcome", "Slot", "Summary", "WorkerOptions", "run_dir_name",
           "work"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"kdrun.worker.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kdrun.worker' has no attribute {name!r}")
