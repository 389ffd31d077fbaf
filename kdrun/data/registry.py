"""Dataset registry: a name in the grid -> a typed config and a builder of train/test sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from kdrun.errors import UserError
from kdrun.params import as_dict, build


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
        _DATASETS[name] = DatasetEntry(params, fn)
        return fn

    return deco


def available() -> list[str]:
    return sorted(_DATASETS)


def entry(name: str) -> DatasetEntry:
    try:
        return _DATASETS[name]
    except KeyError:
        raise UserError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(available())}"
        ) from None


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
        params = build(entry(name).params, rest, f"{where}")
    except UserError as e:
        msg = f"{where}.name: {e}" if str(e).startswith("unknown dataset") else str(e)
        raise UserError(msg) from None
    return {"name": name, **as_dict(params)}


def load(cfg: dict[str, Any], data_dir: Path, download: bool = False) -> Splits:
    """Build a dataset's splits. `download=True` (a worker's or command's --download) allows
    fetching a missing dataset even when its config says `download: false`."""
    e = entry(cfg["name"])
    params = build(e.params, {k: v for k, v in cfg.items() if k != "name"}, "dataset")
    if download and hasattr(params, "download"):
        params = replace(params, download=True)
    return e.build(params, Path(data_dir))


def num_classes(cfg: dict[str, Any]) -> int:
    """Number of classes without building the data (grids need it to create models)."""
    return int(cfg.get("num_classes") or {"cifar100": 100, "imagenet": 1000}[cfg["name"]])
