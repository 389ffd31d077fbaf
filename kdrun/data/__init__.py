"""Datasets behind a registry: synthetic (offline), cifar100, imagenet."""

from kdrun.data import synthetic  # noqa: F401  (registration)
from kdrun.data.registry import Splits, available, load, num_classes, resolve

__all__ = ["Splits", "available", "load", "num_classes", "resolve"]
