"""CIFAR-100 from torchvision's `cifar-100-python` folder, with an optional validation split.

The files are the original pickles (a dict with `data` uint8 [N, 3072] channel-major and
`fine_labels`), read with an unpickler that admits only the numpy array constructors, so a
tampered data file cannot run code. torchvision fetches and checksums the archive when
downloading is allowed.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kdrun import headline
from kdrun.data.catalog import CIFAR_FILES as FILES
from kdrun.data.catalog import CIFAR_FOLDER as FOLDER
from kdrun.data.catalog import Cifar100Params
from kdrun.data.images import cifar_images
from kdrun.data.registry import Splits, register
from kdrun.data.split import stratified_split
from kdrun.errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Admits the globals a pickled numpy array needs (Python 2 and 3 writers) and no other."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in Python 3 protocol-2 pickles
            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")


def read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"{path} is not a CIFAR-100 pickle ({e}); re-extract {URL}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR-100 pickle (expected a dict); re-extract {URL}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_split(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 fine labels N) of `train` or `test`."""
    d = read_pickle(root / name)
    try:
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d["fine_labels"], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise UserError(f"{root / name}: not the CIFAR-100 layout ({e})") from None
    if not len(labels) or len(labels) != len(data) or labels.min() < 0 or labels.max() >= 100:
        raise UserError(f"{root / name}: {len(data)} images but {len(labels)} labels in 0..99")
    return np.ascontiguousarray(data.transpose(0, 2, 3, 1)), labels


def _download(data_dir: Path) -> None:
    from torchvision.datasets import CIFAR100

    try:
        CIFAR100(str(data_dir), train=True, download=True)
    except Exception as e:  # network, disk or checksum failure: say what to do instead
        reason = headline.reason(e)
        raise UserError(f"downloading CIFAR-100 into {data_dir} failed ({reason}); put "
                        f"{FOLDER}/{{train,test,meta}} from {URL} there by hand") from None


def locate(data_dir: Path, download: bool) -> Path:
    """The `cifar-100-python` folder, downloading it first when missing and allowed."""
    root = data_dir / FOLDER
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing and download:
        _download(data_dir)
        missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise UserError(
            f"CIFAR-100 not found ({root / missing[0]} is missing): put "
            f"{FOLDER}/{{train,test,meta}} (from {URL.rsplit('/', 1)[1]}) under "
            f"{data_dir.resolve()} (--data-dir / KDRUN_DATA), or allow downloading "
            "(download: true in the grid's dataset, or --download)"
        )
    return root


@register("cifar100", Cifar100Params)
def build(p: Cifar100Params, data_dir: Path) -> Splits:
    root = locate(data_dir, p.download)
    xtr, ytr = read_split(root, "train")
    xte, yte = read_split(root, "test")
    val = None
    if p.val_split:
        if p.val_split >= len(ytr):
            raise UserError(f"dataset.val_split: {p.val_split} >= {len(ytr)} training images")
        tr, va = stratified_split(ytr, p.val_split, p.split_seed)
        val = cifar_images(xtr[va], ytr[va], train=False)
        xtr, ytr = xtr[tr], ytr[tr]
    return Splits(train=cifar_images(xtr, ytr, train=True),
                  test=cifar_images(xte, yte, train=False),
                  val=val, num_classes=100, image_size=32)
