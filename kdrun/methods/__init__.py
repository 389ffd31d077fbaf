"""Distillation losses, registered by name: `create("kd", T=4)`, `create("kd+rkkd",
kd={"T": 4}, rkkd={"k": 100})`, `available()`.

Importing this package does not import torch: names, hyperparameters and defaults come from
kdrun.methods.catalog; a loss class (`get`, `create`, `Method`) loads its module on use."""

from typing import Any

from kdrun.methods.registry import (
    available,
    check,
    create,
    get,
    needs_teacher,
    register,
    resolve,
    spec,
)

__all__ = ["Method", "available", "check", "create", "get", "needs_teacher", "register",
           "resolve", "spec"]


def __getattr__(name: str) -> Any:
    if name == "Method":  # the base class of the losses (torch)
        from kdrun.methods.base import Method

        return Method
    raise AttributeError(f"module 'kdrun.methods' has no attribute {name!r}")
