"""The teacher registry: published or kdrun-saved checkpoints, verified, measured, by name.

`import_teachers` takes one checkpoint file (raw state dict, {"model": ...}, {"state_dict":
...}, DataParallel `module.` prefix) or the `cifar_teachers` layout of RepDistiller and
mdistiller (a directory or .tar of `<arch>_vanilla/ckpt_epoch_240.pth`). Every file is loaded
weights-only and strictly into its architecture before anything is written, and one import
is one transaction, so a refused file leaves the registry and the teachers folder as they were.
A teacher is registered under its architecture's name unless given one, so a grid's
`ResNet34: {registered: true}` finds an imported ResNet34; `registry_lookup` resolves grid
entries at enqueue time.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kdrun import checkpoints
from kdrun.db.clock import db_now
from kdrun.db.engine import Database
from kdrun.db.models import Teacher
from kdrun.errors import UserError
from kdrun.lazy import lazy

if TYPE_CHECKING:
    import torch

# torch and the registries load on first use: `kdrun status`/`report` import this module
# (teacher lookups) and must stay light.
data, models = lazy("kdrun.data"), lazy("kdrun.models")

SUFFIXES = (".pth", ".pt")
TEACHERS_DIR = "teachers"  # under the runs directory: checkpoints unpacked from archives
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
EPOCH_RE = re.compile(r"^ckpt_epoch_(\d+)$")


@dataclass
class Found:
    """One checkpoint file to import (members of an archive are first unpacked to staging)."""

    path: Path
    label: str  # how messages name it, e.g. "teachers.tar:cifar_teachers/vgg13_vanilla/x.pth"
    folder: str  # its folder's name, e.g. "vgg13_vanilla", for the architecture
    staged: bool


@dataclass
class Imported:
    name: str
    arch: str
    dataset: str
    num_classes: int
    path: str
    sha256: str
    top1: float | None = None
    top5: float | None = None
    status: str = "registered"  # or "already registered"
    staged: Path | None = None
    source: str = "import"  # or "torchvision" (kdrun teacher fetch)


def _pick(paths: list[str]) -> list[str]:
    """One checkpoint per folder: the only one, else the last `ckpt_epoch_N`."""
    by_folder: dict[str, list[str]] = {}
    for p in paths:
        by_folder.setdefault(str(PurePosixPath(p).parent), []).append(p)
    out = []
    for folder, files in sorted(by_folder.items()):
        if len(files) > 1:
            epochs = [(int(m[1]), f) for f in files if (m := EPOCH_RE.match(PurePosixPath(f).stem))]
            if not epochs:
                names = ", ".join(PurePosixPath(f).name for f in sorted(files))
                raise UserError(f"{folder}: several checkpoints ({names}); import one file")
            files = [max(epochs)[1]]
        out.append(files[0])
    return out


def _unpack(archive: Path, staging: Path) -> list[Found]:
    """The chosen checkpoints of a tar, written under `staging` by our own hand (no path from
    the archive is used on disk, so a hostile member name cannot escape)."""
    out = []
    try:
        with tarfile.open(archive) as tar:
            members = {m.name: m for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(SUFFIXES)}
            for i, name in enumerate(_pick(list(members))):
                dest = staging / str(i) / PurePosixPath(name).name
                dest.parent.mkdir(parents=True)
                src = tar.extractfile(members[name])
                assert src is not None  # a regular file
                with src, open(dest, "wb") as f:
                    shutil.copyfileobj(src, f)
                out.append(Found(dest, f"{archive}:{name}", PurePosixPath(name).parent.name, True))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"archive {archive} is corrupt or truncated: {e}") from None
    return out


def discover(source: Path, staging: Path) -> list[Found]:
    """The checkpoints in a file, a directory tree or a tar archive."""
    if source.is_dir():
        files = [str(p.relative_to(source)) for p in sorted(source.rglob("*"))
                 if p.is_file() and p.name.endswith(SUFFIXES)]
        found = [Found(source / f, str(source / f), (source / f).parent.name, False)
                 for f in _pick(files)]
    elif source.is_file():
        found = (_unpack(source, staging) if tarfile.is_tarfile(source)
                 else [Found(source, str(source), source.resolve().parent.name, False)])
    else:
        raise UserError(f"{source} not found")
    if not found:
        raise UserError(f"{source} holds no checkpoints ({' or '.join(SUFFIXES)} files)")
    return found


def _zoo_name(tag: str, dataset: str) -> str | None:
    names = models.available(dataset)
    if tag in names:
        return tag
    folded = [n for n in names if n.lower() == tag.lower()]
    return folded[0] if len(folded) == 1 else None


def _matching_archs(sd: dict[str, torch.Tensor], dataset: str, num_classes: int) -> list[str]:
    """Zoo architectures whose state-dict keys and shapes equal the checkpoint's (on meta)."""
    import torch

    want = {k: tuple(v.shape) for k, v in sd.items()}
    out = []
    for name in models.available(dataset):
        with torch.device("meta"):
            own = models.create(name, num_classes=num_classes, dataset=dataset).state_dict()
        if {k: tuple(v.shape) for k, v in own.items()} == want:
            out.append(name)
    return out


def _named_arch(f: Found, dataset: str) -> str | None:
    """The zoo model its `<arch>_vanilla` folder or its file name names, if any."""
    return _zoo_name(f.folder.removesuffix("_vanilla"), dataset) or _zoo_name(f.path.stem, dataset)


def infer_arch(f: Found, sd: dict[str, torch.Tensor], dataset: str, num_classes: int) -> str:
    """The architecture its folder or file name names, else the one zoo model the weights fit
    (the strict load that follows still decides)."""
    if arch := _named_arch(f, dataset):
        return arch
    fits = _matching_archs(sd, dataset, num_classes)
    if len(fits) != 1:
        why = f"it fits {', '.join(fits)}" if fits else "no zoo architecture fits it"
        raise UserError(f"{f.label}: cannot infer the architecture ({why}); pass --arch")
    return fits[0]


def _load(f: Found) -> Any:
    """checkpoints.load (weights-only), with errors naming the file as the user knows it."""
    try:
        return checkpoints.load(f.path)
    except UserError as e:
        raise UserError(str(e).replace(str(f.path), f.label)) from None


def _check_classes(f: Found, sd: dict[str, torch.Tensor], dataset: str, n_classes: int) -> None:
    """A classifier with another class count than the dataset's: say so, not a shape list."""
    heads = [v for k, v in sd.items() if k.endswith("weight") and v.ndim == 2]
    if heads and heads[-1].shape[0] != n_classes:
        raise UserError(f"{f.label}: its classifier has {heads[-1].shape[0]} classes but "
                        f"--dataset {dataset} has {n_classes}; import it with the --dataset "
                        "it was trained on")


def _check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(f"teacher name {name!r}: use letters, digits and . _ + - only")
    return name


def _evaluate(models_sd: list[tuple[Imported, dict]], ds_cfg: dict[str, Any], data_dir: Path,
              device: torch.device, download: bool) -> str | None:
    """Test top-1/top-5 of each teacher; the reason instead when the dataset is absent."""
    from kdrun.train.evaluate import predict, topk

    try:
        splits = data.load(ds_cfg, data_dir, download=download)
    except UserError as e:
        return str(e)
    loader = data.eval_loader(splits.test, 256, device,
                              kind="device" if device.type == "cuda" else "torch")
    for row, sd in models_sd:
        model = models.create(row.arch, num_classes=row.num_classes, dataset=row.dataset)
        model.load_state_dict(sd)
        row.top1, row.top5 = topk(*predict(model.to(device), loader, device))
    return None


def _commit(db: Database, rows: list[Imported], teachers_dir: Path) -> None:
    """Insert the new rows in one transaction, moving unpacked files into place; undone
    (rows and files) when any name is taken or anything fails."""
    moved: list[Path] = []
    try:
        with db.write() as s:
            taken = {t.name: t for t in s.execute(
                select(Teacher).where(Teacher.name.in_([r.name for r in rows]))).scalars()}
            for r in rows:
                old = taken.get(r.name)
                if old is None:
                    continue
                if (old.sha256, old.arch, old.dataset) != (r.sha256, r.arch, r.dataset):
                    raise UserError(f"a different teacher is already registered as {r.name!r} "
                                    f"({old.arch}, sha256 {old.sha256[:12]}); pass --name")
                r.status, r.path = "already registered", old.path
                r.top1, r.top5 = old.top1, old.top5
            for r in rows:
                if r.status != "registered":
                    continue
                if r.staged is not None:
                    dest = teachers_dir / r.name / r.staged.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(r.staged, dest)
                    moved.append(dest)
                    r.path = str(dest.resolve())
                s.add(Teacher(name=r.name, arch=r.arch, dataset=r.dataset,
                              num_classes=r.num_classes, path=r.path, sha256=r.sha256,
                              top1=r.top1, top5=r.top5, source=r.source, created_at=db_now()))
    except BaseException as e:
        for p in moved:
            p.unlink(missing_ok=True)
            if not any(p.parent.iterdir()):
                p.parent.rmdir()
        if isinstance(e, IntegrityError):  # a concurrent import took one of the names
            raise UserError(f"teacher names {', '.join(r.name for r in rows)}: registered "
                            "concurrently by another import; run the import again") from None
        raise


def import_teachers(db: Database, source: Path, *, runs_dir: Path, data_dir: Path,
                    dataset: str = "cifar100", arch: str | None = None, name: str | None = None,
                    evaluate: bool = True, device: torch.device | str = "cpu",
                    download: bool = False) -> tuple[list[Imported], str | None]:
    """Verify and register every checkpoint in `source`: (rows, why accuracy is missing)."""
    ds_cfg = data.resolve(dataset, "--dataset")
    n_classes = data.num_classes(ds_cfg)
    if arch is not None and arch not in models.available(dataset):
        raise UserError(f"--arch {arch!r}: valid for {dataset}: "
                        f"{', '.join(models.available(dataset))}")
    teachers_dir = runs_dir / TEACHERS_DIR
    teachers_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=teachers_dir))
    try:
        found = discover(source, staging)
        if (arch or name) and len(found) > 1:
            raise UserError(f"--arch and --name apply to one checkpoint; {source} holds "
                            f"{len(found)}: {', '.join(f.label for f in found)}")
        checked: list[tuple[Imported, dict]] = []
        for f in found:
            sd = checkpoints.extract_state_dict(_load(f), f.label)
            _check_classes(f, sd, dataset, n_classes)
            a = arch or infer_arch(f, sd, dataset, n_classes)
            model = models.create(a, num_classes=n_classes, dataset=dataset)
            checkpoints.load_into(model, sd, f"{f.label} (as {a}, {n_classes} classes)")
            sha = checkpoints.sha256(f.path)
            row = Imported(_check_name(name or a), a, dataset, n_classes,
                           str(f.path.resolve()), sha, staged=f.path if f.staged else None)
            checked.append((row, model.state_dict()))
        names = [r.name for r, _ in checked]
        if dup := next((n for n in names if names.count(n) > 1), None):
            raise UserError(f"{source}: two checkpoints would both be registered as {dup!r}")
        note = "--no-eval"
        if evaluate:
            import torch

            note = _evaluate(checked, ds_cfg, data_dir, torch.device(device), download)
        rows = [r for r, _ in checked]
        _commit(db, rows, teachers_dir)
        return rows, note
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def register_pretrained(db: Database, info: dict[str, Any], path: Path, sha: str) -> Imported:
    """Record fetched torchvision weights (kdrun.pretrained) in the registry under their
    weights name, e.g. `ResNet34_Weights.IMAGENET1K_V1`, with the file's sha256. Their
    measured accuracy comes from the students' evaluations; the published one is in grids'
    job configs."""
    from kdrun import pretrained

    row = Imported(_check_name(info["torchvision"]), info["arch"], pretrained.DATASET,
                   pretrained.NUM_CLASSES, str(path.resolve()), sha, source="torchvision")
    _commit(db, [row], path.parent)
    return row


def list_teachers(db: Database) -> list[Teacher]:
    with db.read() as s:
        return list(s.execute(select(Teacher).order_by(Teacher.dataset, Teacher.name)).scalars())


def checkpoint_path(stored: str, runs_dir: Path) -> Path:
    """Trained teachers are stored relative to the runs directory, imports absolute."""
    p = Path(stored)
    return p if p.is_absolute() else (runs_dir / p).resolve()


def registry_lookup(open_db: Callable[[], Database],
                    runs_dir: Path) -> Callable[[str], dict[str, Any]]:
    """For grid expansion (kdrun.grid.TeacherLookup): a registered teacher by name, with an
    absolute path whose file still has the registered sha256. Opens the database lazily, so
    grids without registered teachers never touch it."""
    db: list[Database] = []

    def lookup(name: str) -> dict[str, Any]:
        if not db:
            db.append(open_db())
        with db[0].read() as s:
            t = s.execute(select(Teacher).where(Teacher.name == name)).scalar()
            known = [] if t else list(s.execute(select(Teacher.name).order_by(Teacher.name))
                                      .scalars())
        if t is None:
            raise UserError(f"no registered teacher {name!r}; registered: "
                            f"{', '.join(known) or '(none; see kdrun teacher import)'}")
        path = checkpoint_path(t.path, runs_dir)
        if not path.is_file():
            raise UserError(f"teacher {name!r}: checkpoint {path} not found")
        if checkpoints.sha256(path) != t.sha256:
            raise UserError(f"teacher {name!r}: checkpoint {path} changed since it was "
                            "registered (sha256 differs); import it again under a new name")
        return {"name": t.name, "arch": t.arch, "dataset": t.dataset,
                "num_classes": t.num_classes, "path": str(path), "sha256": t.sha256}

    return lookup
