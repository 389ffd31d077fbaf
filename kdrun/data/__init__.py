"""Datasets behind a registry: synthetic (offline), cifar100, imagenet, tiny_imagenet.

Importing this package does not import torch: the configs are in kdrun.data.catalog, and the
loaders and each dataset's builder load on first use."""

from typing import Any

from kdrun.data.registry import Splits, available, load, num_classes, resolve

__all__ = ["Loaders", "Splits", "available", "eval_loader", "load", "make_loaders",
           "num_classes", "resolve"]


def __getattr__(name: str) -> Any:
    if name in ("Loaders", "eval_loader", "make_loaders"):  # torch
        from kdrun.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'kdrun.data' has no attribute {name!r}")
