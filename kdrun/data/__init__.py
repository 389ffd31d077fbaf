"""Datasets behind a registry: synthetic (offline), cifar100, imagenet, tiny_imagenet."""

from kdrun.data import cifar, imagenet, synthetic, tiny_imagenet  # noqa: F401  (registration)
from kdrun.data.loaders import Loaders, eval_loader, make_loaders
from kdrun.data.registry import Splits, available, load, num_classes, resolve

__all__ = ["Loaders", "Splits", "available", "eval_loader", "load", "make_loaders",
           "num_classes", "resolve"]
