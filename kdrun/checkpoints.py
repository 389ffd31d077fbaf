"""Checkpoint files: written under names no other attempt uses, recorded with a digest in the
database by the lease holder, verified before use, and loaded as data only.

Why this design. A worker that lost its lease (frozen, partitioned) may still have a training
process that finishes writing a file. If files had fixed names (`last.pt`), that process's
rename could replace the new owner's checkpoint, and the next resume would load it: the lease
fences database writes, not renames. So:

- **Names unique to the attempt.** The training process writes each epoch's state to
  `last.<attempt>.e<epoch>.pt` and the final weights to `model.<attempt>.pt` (`<attempt>`: a
  prefix of its lease token), by a temporary file, fsync and rename, and sends the file's
  sha256 with the epoch (or result) message. No attempt can overwrite another's file.
- **The database says which file is current.** The supervisor records {epoch, path, sha256}
  in `kdrun_checkpoint_files` in the same lease-fenced transaction as the epoch's metrics
  (`queue.record_epoch`; final weights: the fenced `queue.succeed` writes the result's path and
  sha256). A process that lost its lease cannot record anything, so its files are never
  loaded; they are pruned when the job finishes. The last `KEEP` records of a job are kept,
  older ones and their files dropped.
- **Resume verifies.** A claim carries the job's records, newest first. `resume` loads the
  newest whose file exists, has the recorded sha256 and unpickles as weights; a damaged one
  (bit flips, truncation, deleted) is skipped with a note in `train.log` and the job's status,
  falling back to the previous one, or to epoch 0 when none is good. A file that will never
  load therefore costs no attempt. Teachers trained by kdrun are verified against their
  result's sha256, imported ones against the sha256 fixed at enqueue; the teacher-logit cache
  against the digest in its sidecar.
- **One path.** Everything that writes training state (the trainer, a future DDP rank 0, a
  tracker's extra state inside the trainer's dict) goes through `save` and the records above.

Without a database (`train()` called directly) there are no records: `resume` then takes the
newest `last.*.e*.pt` in the run directory that loads, unverified.

Loading always uses `weights_only=True` (a checkpoint is data, not code), and every failure is
one line naming the file: missing, not a checkpoint at all, damaged, or refused as unsafe
(with the offending global).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdrun import headline
from kdrun.errors import UserError
from kdrun.headline import disk_full, enospc

if TYPE_CHECKING:
    import torch

KEEP = 2  # epoch checkpoints kept per job: the newest, and one to fall back to
LEGACY_LAST = "last.pt"  # the fixed name of kdrun versions before fencing (resumed, unverified)
_EPOCH_RE = re.compile(r"^last\.([0-9A-Za-z_-]+)\.e(\d+)\.pt$")
_FINAL_RE = re.compile(r"^model\.([0-9A-Za-z_-]+)\.pt$")


class Damaged(UserError):
    """A checkpoint file that cannot be used: missing, unreadable, or not what was recorded."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def epoch_name(attempt: str, epoch: int) -> str:
    return f"last.{attempt}.e{epoch:04d}.pt"


def final_name(attempt: str | None) -> str:
    return f"model.{attempt}.pt" if attempt else "model.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and not isinstance(e, OSError) and disk_full(path.parent):
            raise enospc(path) from e  # torch says "unexpected pos"; the cause is the disk
        raise


def save(obj: Any, path: str | Path) -> str:
    """Write a checkpoint (atomically) and return the sha256 of the file as it is on disk:
    the one path through which training state is written."""
    atomic_save(obj, path)
    return sha256(path)


@dataclass(frozen=True)
class Record:
    """A checkpoint the database vouches for: its epoch, path (relative to the runs
    directory) and sha256."""

    epoch: int
    path: str
    sha256: str | None  # None: unverified (no database, or a legacy last.pt)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "path": self.path, "sha256": self.sha256}


def load_verified(path: str | Path, digest: str | None) -> Any:
    """`load`, after checking the file's sha256 against the recorded one (when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise Damaged(f"checkpoint {path} is missing")
    if digest is not None:
        got = sha256(path)
        if got != digest:
            raise Damaged(f"checkpoint {path} is damaged: sha256 {got[:12]}… differs from the "
                          f"recorded {digest[:12]}…")
    return load(path)


def local_records(run_dir: Path) -> list[Record]:
    """Without a database: the epoch checkpoints in a run directory, newest first (paths
    relative to its parent, the runs directory, like the database's records)."""
    found = []
    for p in run_dir.glob("last.*.e*.pt"):
        m = _EPOCH_RE.match(p.name)
        if m:
            found.append((int(m.group(2)), p.stat().st_mtime, p.name))
    names = [name for *_, name in sorted(found, reverse=True)]
    if not names and (run_dir / LEGACY_LAST).is_file():
        names.append(LEGACY_LAST)
    return [Record(int(_EPOCH_RE.match(n).group(2)) if _EPOCH_RE.match(n) else -1,
                   f"{run_dir.name}/{n}", None) for n in names]


def resume(records: Iterable[Record], base: Path, note: Callable[[str, list[str]], None],
           ) -> tuple[Any, Record] | None:
    """The newest usable checkpoint of `records` (paths relative to `base`) and its record,
    or None: start from epoch 0. Each skipped one is reported through `note(text, bad)`,
    `bad` being the paths of the records found damaged."""
    bad: list[str] = []
    reasons: list[str] = []
    for rec in records:
        try:
            obj = load_verified(base / rec.path, rec.sha256)
        except UserError as e:  # Damaged, corrupt, refused: never loadable, try the previous
            bad.append(rec.path)
            reasons.append(str(e))
            continue
        if reasons:
            note(f"resumed from epoch {_epoch_of(obj, rec)} instead: "
                 + "; ".join(reasons), bad)
        return obj, rec
    if reasons:
        note("restarted from epoch 0: no usable checkpoint (" + "; ".join(reasons) + ")", bad)
    return None


def _epoch_of(obj: Any, rec: Record) -> int:
    try:
        return int(obj["state"]["epoch"])
    except (KeyError, TypeError, ValueError):
        return rec.epoch


def prune(run_dir: Path, keep: Iterable[str]) -> list[str]:
    """Delete this run's checkpoint files (epoch states, attempt-named final weights, dead
    writers' temporary files) except the names in `keep`; returns the names deleted."""
    keep = {Path(k).name for k in keep}
    gone = []
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        name = p.name
        ours = (_EPOCH_RE.match(name) or _FINAL_RE.match(name) or name == LEGACY_LAST
                or (name.startswith((".last.", ".model.")) and name.endswith(".tmp")))
        if ours and name not in keep:
            p.unlink(missing_ok=True)
            gone.append(name)
    return gone


def discard(runs_dir: Path, paths: Iterable[str]) -> None:
    """Delete the files of records the database dropped (paths relative to runs_dir)."""
    for p in paths:
        try:
            (runs_dir / p).unlink(missing_ok=True)
        except OSError:
            pass  # pruned again when the job finishes


def settle(runs_dir: Path, run_dir: Path, final: str, newest: str | None) -> None:
    """After the lease holder recorded a job's success: name its final weights `model.pt`
    and prune the run directory to them and the newest epoch checkpoint (dead attempts'
    files included). Best effort: a failure here loses nothing recorded."""
    try:
        final_path = runs_dir / final if not Path(final).is_absolute() else Path(final)
        publish_final(final_path)
        prune(run_dir, keep=[final_path.name, final_name(None)]
              + ([Path(newest).name] if newest else []))
    except OSError:
        pass


def publish_final(path: Path) -> None:
    """Give the recorded final weights their conventional name, `model.pt`, beside them (a
    hard link, or a copy where links fail). Only the lease holder calls this, after its fenced
    write recorded `path`; the recorded path stays the reference."""
    target = path.with_name(final_name(None))
    tmp = path.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, target)


def load(path: str | Path) -> Any:
    """torch.load with weights_only=True; a bad file raises a one-line UserError naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    kind = _sniff(path)
    if kind is None:
        raise UserError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive "
                        "nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickle_reason(str(e))
        if reason.startswith("Unsupported global"):
            raise UserError(f"checkpoint {path} refused as unsafe: it needs "
                            f"{reason.removeprefix('Unsupported global: ').strip()}, which "
                            "weights-only loading does not allow (code, not data)") from None
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint: {reason}") from None
    except Exception as e:  # zip/pickle internals: RuntimeError, EOFError, IndexError, ...
        msg = headline.reason(e)
        raise UserError(f"checkpoint {path} is corrupt or truncated: {msg}") from None


def _sniff(path: Path) -> str | None:
    """'zip' (torch.save's format), 'pickle' (the legacy format), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UserError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return None


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
        isinstance(k, str) and _is_tensor(v) for k, v in sd.items()
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


def _is_tensor(v: Any) -> bool:
    import torch

    return isinstance(v, torch.Tensor)
