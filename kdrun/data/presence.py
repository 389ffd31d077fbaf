"""Is a grid's dataset there? The cheap check `kdrun enqueue` makes (file names only, no
reading), so a missing dataset is one message at enqueue instead of every job failing the
same way on the workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdrun.data.catalog import CIFAR_FILES, CIFAR_FOLDER, TINY_FOLDER, TINY_LAYOUT
from kdrun.errors import UserError


def problem(ds: dict[str, Any], data_dir: Path) -> str | None:
    """Why the workers will not find the dataset under `data_dir`, or None when they will
    (or will download it: `download: true` in the grid's dataset)."""
    if ds["name"] == "cifar100":
        root = data_dir / CIFAR_FOLDER
        missing = [f for f in CIFAR_FILES if not (root / f).is_file()]
        if not missing or ds.get("download"):
            return None
        return f"CIFAR-100 not found under {data_dir.resolve()} ({root / missing[0]} is missing)"
    if ds["name"] == "imagenet":
        root = Path(ds.get("root", "imagenet"))
        root = root if root.is_absolute() else data_dir / root
        missing = [d for d in ("train", "val") if not (root / d).is_dir()]
        return f"ImageNet not found ({root / missing[0]} is missing)" if missing else None
    if ds["name"] == "tiny_imagenet":
        root = Path(ds.get("root", TINY_FOLDER))
        root = root if root.is_absolute() else data_dir / root
        need = [root / "wnids.txt", root / "train", root / "val" / "val_annotations.txt"]
        missing = [p for p in need if not p.exists()]
        if not missing or ds.get("download"):
            return None
        return (f"Tiny-ImageNet not found ({missing[0]} is missing; expected "
                f"{TINY_LAYOUT})")
    return None  # generated in memory (synthetic)


def require(ds: dict[str, Any], data_dir: Path, download: bool) -> None:
    """Refuse to enqueue a grid whose dataset is missing, saying every way out; with
    `download`, fetch a downloadable one now."""
    why = problem(ds, data_dir)
    if why is None:
        return
    if download and ds["name"] == "cifar100":
        from kdrun.data import cifar  # torch: only to download

        cifar.locate(data_dir, download=True)
        return
    fetch = ("pass --download to fetch it now, or set `download: true` under the grid's "
             "dataset so workers fetch it; " if ds["name"] == "cifar100" else "")
    raise UserError(f"{why}: point --data-dir (KDRUN_DATA) at the folder that holds it; "
                    f"{fetch}or pass --no-data-check if the workers' machines have it "
                    "(their --data-dir)")
