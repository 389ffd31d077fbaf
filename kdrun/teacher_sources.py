"""Where a grid's teacher comes from: one small resolver per source, one interface.

`teachers: {NAME: {SOURCE: VALUE, ...}}` names exactly one source:

- `train: true`           a vanilla training job of its own, which its students wait for;
- `checkpoint: PATH`      a file, fixed by its sha256 now;
- `registered: true|NAME` a teacher of kdrun's registry (`kdrun teacher import`, or trained);
- `torchvision: WEIGHTS`  torchvision's pretrained ImageNet weights (kdrun.pretrained).

Each resolver turns its entry into a `Teacher`: what every student's config records under
`teacher` (name, arch, and how to find the weights) and the training job, if any. Whatever
can be checked cheaply is checked here, at enqueue, rather than when a worker claims a
student: a checkpoint's keys and shapes against its architecture and the dataset's classes,
and that a registered teacher is the architecture it is declared as.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdrun import checkpoints, pretrained
from kdrun.errors import UserError
from kdrun.lazy import lazy
from kdrun.spec import JobSpec

data, models = lazy("kdrun.data"), lazy("kdrun.models")  # torch: loaded on first use

TEACHER_PRIORITY = 10  # teachers first: every student of theirs waits for them
# Registry name -> {"arch", "dataset", "num_classes", "path", "sha256"}; raises UserError when
# unknown. Given by the caller that has the database (kdrun.teachers.registry_lookup).
TeacherLookup = Callable[[str], dict[str, Any]]


@dataclass
class Context:
    """What resolvers need from the grid around them."""

    ds: dict[str, Any]  # the resolved dataset config
    arch_ok: Callable[[Any, str], str]  # a valid architecture of the dataset, or UserError
    recipes: Callable[[Any, str], list[dict[str, Any]]]  # grid recipe + override -> recipes
    lookup: TeacherLookup | None = None

    @property
    def dataset(self) -> str:
        return self.ds["name"]

    @property
    def num_classes(self) -> int:
        return data.num_classes(self.ds)


@dataclass
class Teacher:
    info: dict[str, Any]  # recorded in every student's config as `teacher`
    job: JobSpec | None = None  # its training job (train: true)


Resolver = Callable[[str, dict[str, Any], str, Context], Teacher]
SOURCES: dict[str, Resolver] = {}


def source(key: str) -> Callable[[Resolver], Resolver]:
    def deco(fn: Resolver) -> Resolver:
        SOURCES[key] = fn
        return fn

    return deco


def keys() -> tuple[str, ...]:
    return ("arch", *SOURCES, "seed", "recipe")


USAGE = "{train: true | checkpoint: PATH | registered: true | NAME | torchvision: WEIGHTS}"


def resolve(name: str, cfg: Any, where: str, ctx: Context) -> Teacher:
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise UserError(f"{where}: expected a mapping {USAGE}")
    unknown = [k for k in cfg if k not in keys()]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(keys())}")
    given = [k for k in SOURCES if cfg.get(k) not in (None, False)]
    if len(given) != 1:
        raise UserError(f"{where}: give exactly one of 'train: true', 'checkpoint: PATH', "
                        "'registered: true | NAME' or 'torchvision: WEIGHTS'")
    return SOURCES[given[0]](name, cfg, where, ctx)


def resolve_all(raw: Any, ctx: Context) -> dict[str, Teacher]:
    """The grid's `teachers:` mapping, each resolved."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UserError(f"teachers: expected a mapping of teacher name -> {USAGE}")
    return {name: resolve(name, cfg, f"teachers.{name}", ctx) for name, cfg in raw.items()}


def _arch(name: str, cfg: dict[str, Any], where: str, ctx: Context) -> str:
    return ctx.arch_ok(cfg.get("arch", name), f"{where}.arch" if "arch" in cfg else where)


@source("train")
def _train(name: str, cfg: dict[str, Any], where: str, ctx: Context) -> Teacher:
    arch = _arch(name, cfg, where, ctx)
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{where}.seed: expected an integer, got {seed!r}")
    recipes = ctx.recipes(cfg.get("recipe"), f"{where}.recipe")
    if len(recipes) != 1:
        raise UserError(f"{where}.recipe: a teacher's recipe cannot be a sweep; "
                        "give the teacher single recipe values")
    job = JobSpec("teacher", {"kind": "teacher", "dataset": ctx.ds, "recipe": recipes[0],
                              "student": arch, "teacher": None,
                              "method": {"name": "vanilla", "params": {}}, "seed": seed},
                  priority=TEACHER_PRIORITY)
    return Teacher({"name": name, "arch": arch, "job": job.hash}, job)


@source("checkpoint")
def _checkpoint(name: str, cfg: dict[str, Any], where: str, ctx: Context) -> Teacher:
    arch = _arch(name, cfg, where, ctx)
    path = Path(str(cfg["checkpoint"])).expanduser()
    if not path.is_file():
        raise UserError(f"{where}.checkpoint: file {cfg['checkpoint']} not found")
    check_fits(path, arch, ctx, f"{where}.checkpoint")
    return Teacher({"name": name, "arch": arch, "checkpoint": str(path.resolve()),
                    "sha256": checkpoints.sha256(path)})


def _load_cheaply(path: Path) -> Any:
    """The checkpoint weights-only, memory-mapped where the file format allows (the tensors
    are not read: only keys and shapes are looked at)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old (non-zip) file cannot be mapped; read it, with kdrun's errors
        return checkpoints.load(path)


def check_fits(path: Path, arch: str, ctx: Context, where: str) -> None:
    """Refuse a checkpoint whose keys and shapes are not `arch`'s with the dataset's classes."""
    import torch

    sd = checkpoints.extract_state_dict(_load_cheaply(path), path)
    n = ctx.num_classes
    with torch.device("meta"):
        own = models.create(arch, num_classes=n, dataset=ctx.dataset).state_dict()
    want = {k: tuple(v.shape) for k, v in own.items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if want == got:
        return
    if want.keys() == got.keys():
        differ = [k for k in want if want[k] != got[k]]
        classes = {got[k][0] for k in differ if want[k][0] == n and want[k][1:] == got[k][1:]}
        if len(classes) == 1 and len(differ) <= 2:  # only the classifier's weight and bias
            raise UserError(f"{where}: {path} is a {arch} with {classes.pop()} classes; the "
                            f"grid's dataset {ctx.dataset} has {n}")
    fits = [a for a in models.available(ctx.dataset) if a != arch and _fits(got, a, n, ctx)]
    hint = f"; it fits {', '.join(fits)} (state arch: {fits[0]})" if fits else ""
    raise UserError(f"{where}: {path} is not a {arch} with {n} classes "
                    f"({_mismatch(want, got)}){hint}")


def _mismatch(want: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and want[k] != got[k]]
    parts = [f"{len(missing)} missing keys, e.g. {missing[0]}"] if missing else []
    parts += [f"{len(extra)} unexpected keys, e.g. {extra[0]}"] if extra else []
    parts += [f"{len(wrong)} shape mismatches, e.g. {wrong[0]}: {got[wrong[0]]} vs "
              f"{want[wrong[0]]}"] if wrong else []
    return "; ".join(parts)


def _fits(got: dict[str, tuple[int, ...]], arch: str, n: int, ctx: Context) -> bool:
    import torch

    with torch.device("meta"):
        own = models.create(arch, num_classes=n, dataset=ctx.dataset).state_dict()
    return {k: tuple(v.shape) for k, v in own.items()} == got


@source("registered")
def _registered(name: str, cfg: dict[str, Any], where: str, ctx: Context) -> Teacher:
    """A teacher from the registry: `registered: true` (under its grid name) or `: NAME`.
    Its path and sha256 are fixed now, so a checkpoint changed later fails the job."""
    reg = cfg["registered"]
    reg_name = name if reg is True else reg
    w = f"{where}.registered"
    if not isinstance(reg_name, str):
        raise UserError(f"{w}: expected true or a registered teacher's name, got {reg!r}")
    if ctx.lookup is None:
        raise UserError(f"{w}: registered teachers are read from the database; "
                        "enqueue this grid with `kdrun enqueue`")
    try:
        row = ctx.lookup(reg_name)
    except UserError as e:
        raise UserError(f"{w}: {e}") from None
    n = ctx.num_classes
    if row["dataset"] != ctx.dataset or row["num_classes"] != n:
        raise UserError(f"{w}: teacher {reg_name!r} was registered for {row['dataset']} "
                        f"({row['num_classes']} classes), the grid's dataset is {ctx.dataset} "
                        f"({n} classes)")
    if "arch" in cfg and cfg["arch"] != row["arch"]:
        raise UserError(f"{where}.arch: {cfg['arch']!r}, but registered teacher {reg_name!r} "
                        f"is a {row['arch']}")
    if "arch" not in cfg and name != row["arch"] and name in models.available(ctx.dataset):
        # Reports look published numbers up by architecture: a teacher declared under another
        # architecture's name would stand beside that architecture's numbers.
        raise UserError(f"{w}: registered teacher {reg_name!r} is a {row['arch']}, not the "
                        f"{name} it is declared as; declare it as {row['arch']}, or state "
                        f"'arch: {row['arch']}' to keep the name {name!r}")
    return Teacher({"name": name, "arch": row["arch"], "checkpoint": row["path"],
                    "sha256": row["sha256"]})


@source("torchvision")
def _torchvision(name: str, cfg: dict[str, Any], where: str, ctx: Context) -> Teacher:
    """torchvision's pretrained weights: fixed now by URL and published hash; the file is
    verified now when present, and found (or fetched) by the worker that trains a student."""
    w = f"{where}.torchvision"
    arch = _arch(name, cfg, where, ctx)
    if (ctx.dataset, ctx.num_classes) != (pretrained.DATASET, pretrained.NUM_CLASSES):
        raise UserError(f"{w}: torchvision's weights are for ImageNet's "
                        f"{pretrained.NUM_CLASSES} classes; the grid's dataset is "
                        f"{ctx.dataset} ({ctx.num_classes} classes)")
    info = {"name": name, "arch": arch, **pretrained.resolve(arch, cfg["torchvision"], w)}
    p = pretrained.path_of(info)
    if p.is_file():
        try:
            pretrained.verify(p, info)
        except UserError as e:
            raise UserError(f"{w}: {e}") from None
    return Teacher(info)
