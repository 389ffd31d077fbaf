"""Dataset registry: a name in the grid -> a typed config and a builder of train/test sets.

The configs are known without torch (kdrun.data.catalog), so `resolve` checks a grid alone;
a builder's module (torch) is imported when its dataset is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdrun.data.catalog import DATASETS
from kdrun.errors import UserError
from kdrun.params import as_dict, build

if TYPE_CHECKING:
    from torch.utils.data import Dataset


@dataclass
class Splits:
    """What a trainer needs from a dataset. `val` is None unless a held-out split was asked."""

    train: Dataset
    test: Dataset
    val: Dataset | None
    num_classes: int
    image_size: int


@dataclass
class DatasetEntry:
    params: type
    build: Callable[[Any, Path], Splits]


_DATASETS: dict[str, DatasetEntry] = {}


def register(name: str, params: type) -> Callable[[Callable[[Any, Path], Splits]], Any]:
    def deco(fn: Callable[[Any, Path], Splits]) -> Callable[[Any, Path], Splits]:
        # kdrun's own datasets have their config in kdrun.data.catalog; a plugin's joins it
        if DATASETS.setdefault(name, (params, fn.__module__))[0] is not params:
            raise ValueError(f"dataset {name!r}: its config must be the one in kdrun.data.catalog")
        _DATASETS[name] = DatasetEntry(params, fn)
        return fn

    return deco


def available() -> list[str]:
    return sorted(DATASETS)


def params(name: str) -> type:
    """The config dataclass of a dataset (no torch)."""
    try:
        return DATASETS[name][0]
    except KeyError:
        raise UserError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(available())}"
        ) from None


def entry(name: str) -> DatasetEntry:
    """Config and builder of a dataset, importing the builder's module (torch)."""
    params(name)  # unknown names: a UserError listing the valid ones
    if name not in _DATASETS:
        importlib.import_module(DATASETS[name][1])
    return _DATASETS[name]


def resolve(cfg: Any, where: str = "dataset") -> dict[str, Any]:
    """Validated full dataset config (with defaults) from the grid's `dataset:` mapping."""
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise UserError(
            f"{where}: expected a mapping with a 'name' (one of {', '.join(available())})"
        )
    rest = {k: v for k, v in cfg.items() if k != "name"}
    name = cfg["name"]
    try:
        p = build(params(name), rest, f"{where}")
    except UserError as e:
        msg = f"{where}.name: {e}" if str(e).startswith("unknown dataset") else str(e)
        raise UserError(msg) from None
    return {"name": name, **as_dict(p)}


def load(cfg: dict[str, Any], data_dir: Path, download: bool = False) -> Splits:
    """Build a dataset's splits. `download=True` (a worker's or command's --download) allows
    fetching a missing dataset even when its config says `download: false`."""
    e = entry(cfg["name"])
    p = build(e.params, {k: v for k, v in cfg.items() if k != "name"}, "dataset")
    if download and hasattr(p, "download"):
        p = replace(p, download=True)
    return e.build(p, Path(data_dir))


def num_classes(cfg: dict[str, Any]) -> int:
    """Number of classes without building the data (grids need it to create models)."""
    return int(cfg.get("num_classes") or {"cifar100": 100, "imagenet": 1000}[cfg["name"]])
