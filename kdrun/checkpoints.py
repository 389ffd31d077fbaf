"""Reading and writing checkpoint files safely.

Loading always uses `weights_only=True` (a checkpoint is data, not code). Saving writes a
temporary file and renames it, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from kdrun.errors import UserError


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> Any:
    """torch.load with weights_only=True; a bad file raises a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"checkpoint {path} is not a weights-only file (refusing to unpickle code): "
            f"{_unpickle_reason(str(e))}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} is corrupt or truncated: {msg}") from None


def _unpickle_reason(msg: str) -> str:
    """The informative part of torch's weights-only refusal, e.g. 'Unsupported global: GLOBAL
    argparse.Namespace' (torch's message also carries ANSI codes and advice to load unsafely)."""
    m = re.search(r"Unsupported (?:global|operand)[^\n]*?(?= was not|\.\s|$)", msg, re.M)
    if m:
        return m.group(0).strip()
    text = re.sub(r"\x1b\[[0-9;]*m", "", msg).strip()
    return text.splitlines()[0] if text else "unsupported content"


def extract_state_dict(obj: Any, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights from the layouts in the wild: raw, {"model": ...}, {"state_dict": ...},
    with or without DataParallel's `module.` prefix."""
    sd = obj
    for key in ("model", "state_dict", "net"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise UserError(f"{path}: no state dict found (expected a mapping of names to tensors)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) with a one-line reason on mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} "
                         f"vs {tuple(own[k].shape)})")
        raise UserError(f"{what} does not match the architecture: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)
