"""Distillation losses, registered by name: `create("kd", T=4)`, `create("kd+rkkd",
kd={"T": 4}, rkkd={"k": 100})`, `available()`."""

from kdrun.methods import (  # noqa: F401  (registration side effects)
    cakd,
    cmkd,
    ctkd,
    dist,
    dkd,
    kd,
    ls,
    mlkd,
    rkkd,
    vanilla,
)
from kdrun.methods.base import Method
from kdrun.methods.registry import (
    available,
    check,
    create,
    get,
    needs_teacher,
    register,
    resolve,
)

__all__ = ["Method", "available", "check", "create", "get", "needs_teacher", "register",
           "resolve"]
