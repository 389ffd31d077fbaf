"""Grid files: YAML -> validated, expanded list of JobSpecs.

A grid names a dataset, a recipe, teachers, teacher->student pairs, methods and seeds. Any
hyperparameter given as a list is a sweep (one job per value), except fields that are
themselves lists (e.g. `lr_milestones`), which sweep only when given a list of lists.
Every mistake raises a UserError naming the file, the key path and the valid choices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kdrun import checkpoints, data, methods, models
from kdrun.errors import UserError
from kdrun.params import as_dict, build, field_types, is_list_type
from kdrun.recipe import Recipe
from kdrun.spec import JobSpec

GRID_KEYS = ("name", "dataset", "recipe", "teachers", "pairs", "methods", "seeds")
TEACHER_KEYS = ("arch", "train", "checkpoint", "registered", "seed", "recipe")
PAIR_KEYS = ("teacher", "student", "recipe", "methods")
TEACHER_PRIORITY = 10  # teachers first: every student of theirs waits for them
# Registry name -> {"arch", "dataset", "num_classes", "path", "sha256"}; raises UserError when
# unknown. Given by the caller that has the database (kdrun.teachers.registry_lookup).
TeacherLookup = Callable[[str], dict[str, Any]]


def resolve_path(path: str | Path) -> Path:
    """A grid path on disk, or else the grid of that name shipped inside kdrun."""
    p = Path(path)
    if p.exists():
        return p
    shipped = resources.files("kdrun") / "grids" / p.name
    if p.suffix in (".yaml", ".yml") and shipped.is_file():
        return Path(str(shipped))
    names = sorted(
        f.name for f in (resources.files("kdrun") / "grids").iterdir() if f.name.endswith(".yaml")
    )
    raise UserError(f"grid file {path} not found; shipped grids: {', '.join(names)}")


def load(
    path: str | Path, teacher_lookup: TeacherLookup | None = None
) -> tuple[str, list[JobSpec]]:
    """Read and expand a grid file: (grid name, job specs in enqueue order).
    `teacher_lookup` resolves `registered:` teachers; without it they are an error."""
    p = resolve_path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    try:
        return expand(raw, default_name=p.stem, teacher_lookup=teacher_lookup)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(allowed)}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(allowed)}")
    return obj


def sweep(values: dict[str, Any], types: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over list-valued keys (a list-typed field sweeps on a list of lists)."""
    axes = []
    for k, v in values.items():
        list_field = is_list_type(types.get(k))
        is_sweep = isinstance(v, list) and (not list_field or (v and isinstance(v[0], list)))
        axes.append([(k, x) for x in v] if is_sweep else [(k, v)])
    return [dict(combo) for combo in itertools.product(*axes)]


def _method_entries(spec: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """`methods:` list -> [(name, hparams)] with sweeps expanded."""
    if not isinstance(spec, list) or not spec:
        raise UserError(f"{where}: expected a non-empty list of methods")
    out = []
    for i, m in enumerate(spec):
        w = f"{where}[{i}]"
        if isinstance(m, str):
            name, hp = m, {}
        elif isinstance(m, dict) and len(m) == 1:
            name, hp = next(iter(m.items()))
            hp = hp or {}
            if not isinstance(hp, dict):
                raise UserError(f"{w}.{name}: expected a mapping of hyperparameters")
        else:
            raise UserError(f"{w}: expected a method name or {{name: {{hyperparameters}}}}")
        try:
            out += [(name, v) for v in _sweep_method(name, hp)]
        except UserError as e:
            raise UserError(f"{w}: {e}") from None
    return out


def _sweep_method(name: str, hp: dict[str, Any]) -> list[dict[str, Any]]:
    parts = name.split("+")
    if len(parts) == 1:
        return sweep(hp, field_types(methods.get(name).Params))
    # Composed method: hyperparameters per part, each part swept independently.
    per_part = {}
    for part, values in hp.items():
        types = field_types(methods.get(part).Params) if part in methods.available() else {}
        per_part[part] = sweep(values, types) if isinstance(values, dict) else [values]
    keys = list(per_part)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*per_part.values())]


def _recipe(base: dict[str, Any], override: Any, where: str) -> dict[str, Any]:
    if override is not None and not isinstance(override, dict):
        raise UserError(f"{where}: expected a mapping of recipe keys")
    return {**base, **(override or {})}




def _registered_teacher(
    tname: str, tcfg: dict[str, Any], w: str, ds: dict[str, Any], lookup: TeacherLookup | None
) -> dict[str, Any]:
    """A teacher from the registry: `registered: true` (under its grid name) or `: NAME`.
    Its path and sha256 are fixed now, so a checkpoint changed later fails the job."""
    reg = tcfg["registered"]
    name = tname if reg is True else reg
    if not isinstance(name, str):
        raise UserError(
            f"{w}.registered: expected true or a registered teacher's name, got {reg!r}"
        )
    if lookup is None:
        raise UserError(
            f"{w}.registered: registered teachers are read from the database; "
            "enqueue this grid with `kdrun enqueue`"
        )
    try:
        row = lookup(name)
    except UserError as e:
        raise UserError(f"{w}.registered: {e}") from None
    n = data.num_classes(ds)
    if row["dataset"] != ds["name"] or row["num_classes"] != n:
        raise UserError(
            f"{w}.registered: teacher {name!r} was registered for {row['dataset']} "
            f"({row['num_classes']} classes), the grid's dataset is {ds['name']} "
            f"({n} classes)"
        )
    if "arch" in tcfg and tcfg["arch"] != row["arch"]:
        raise UserError(
            f"{w}.arch: {tcfg['arch']!r}, but registered teacher {name!r} is a {row['arch']}"
        )
    return {"name": tname, "arch": row["arch"], "checkpoint": row["path"], "sha256": row["sha256"]}


def expand(
    raw: Any,
    default_name: str = "grid",
    teacher_lookup: TeacherLookup | None = None,
) -> tuple[str, list[JobSpec]]:
    g = _check_keys(raw, GRID_KEYS, "grid")
    for key in ("dataset", "pairs", "methods"):
        if key not in g:
            raise UserError(f"missing required key {key!r}")
    name = str(g.get("name") or default_name)
    ds = data.resolve(g["dataset"])
    dataset, n_classes = ds["name"], data.num_classes(ds)
    seeds = g.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise UserError(f"seeds: expected a list of integers, got {seeds!r}")
    base_recipe = _recipe({}, g.get("recipe"), "recipe")

    def arch_ok(arch: Any, where: str) -> str:
        if not isinstance(arch, str) or arch not in models.available(dataset):
            choices = ", ".join(models.available(dataset))
            raise UserError(
                f"{where}: unknown architecture {arch!r} for {dataset}; valid: {choices}"
            )
        return arch

    def recipes(override: dict[str, Any], where: str) -> list[dict[str, Any]]:
        out = []
        for r in sweep(override, field_types(Recipe)):
            out.append(as_dict(build(Recipe, r, where)))
        return out

    # Teachers: a vanilla training job each (train: true), a checkpoint file, or a registered
    # teacher (kdrun teacher import, or trained by an earlier grid).
    teachers: dict[str, tuple[dict[str, Any], JobSpec | None]] = {}
    specs: list[JobSpec] = []
    raw_teachers = g.get("teachers") or {}
    if not isinstance(raw_teachers, dict):
        raise UserError(
            "teachers: expected a mapping of teacher name -> "
            "{train: true | checkpoint: PATH | registered: true | NAME}"
        )
    for tname, tcfg in raw_teachers.items():
        w = f"teachers.{tname}"
        tcfg = _check_keys(tcfg or {}, TEACHER_KEYS, w)
        train, ckpt = bool(tcfg.get("train", False)), tcfg.get("checkpoint")
        registered = tcfg.get("registered") not in (None, False)
        if train + (ckpt is not None) + registered != 1:
            raise UserError(
                f"{w}: give exactly one of 'train: true', 'checkpoint: PATH' or "
                "'registered: true | NAME'"
            )
        if registered:
            teachers[tname] = (_registered_teacher(tname, tcfg, w, ds, teacher_lookup), None)
            continue
        arch = arch_ok(tcfg.get("arch", tname), f"{w}.arch" if "arch" in tcfg else w)
        if train:
            seed = tcfg.get("seed", 0)
            if not isinstance(seed, int):
                raise UserError(f"{w}.seed: expected an integer, got {seed!r}")
            tr = recipes(_recipe(base_recipe, tcfg.get("recipe"), f"{w}.recipe"), f"{w}.recipe")
            if len(tr) != 1:
                raise UserError(
                    f"{w}.recipe: a teacher's recipe cannot be a sweep; "
                    "give the teacher single recipe values"
                )
            job = JobSpec(
                "teacher",
                {
                    "kind": "teacher",
                    "dataset": ds,
                    "recipe": tr[0],
                    "student": arch,
                    "teacher": None,
                    "method": {"name": "vanilla", "params": {}},
                    "seed": seed,
                },
                priority=TEACHER_PRIORITY,
            )
            specs.append(job)
            teachers[tname] = ({"name": tname, "arch": arch, "job": job.hash}, job)
        else:
            path = Path(str(ckpt)).expanduser()
            if not path.is_file():
                raise UserError(f"{w}.checkpoint: file {ckpt} not found")
            teachers[tname] = (
                {
                    "name": tname,
                    "arch": arch,
                    "checkpoint": str(path.resolve()),
                    "sha256": checkpoints.sha256(path),
                },
                None,
            )

    pairs = g["pairs"]
    if not isinstance(pairs, list) or not pairs:
        raise UserError("pairs: expected a non-empty list of {teacher: NAME, student: ARCH}")
    default_methods = _method_entries(g["methods"], "methods")
    seen: set[str] = {s.hash for s in specs}
    for i, pair in enumerate(pairs):
        w = f"pairs[{i}]"
        pair = _check_keys(pair, PAIR_KEYS, w)
        if "student" not in pair:
            raise UserError(f"{w}: missing 'student'")
        student = arch_ok(pair["student"], f"{w}.student")
        tname = pair.get("teacher")
        if tname not in teachers:
            raise UserError(
                f"{w}.teacher: {tname!r} is not declared under 'teachers'; declared: "
                f"{', '.join(map(str, teachers)) or '(none)'}"
            )
        tinfo, tjob = teachers[tname]
        pair_methods = (
            _method_entries(pair["methods"], f"{w}.methods")
            if "methods" in pair
            else default_methods
        )
        pair_recipes = recipes(
            _recipe(base_recipe, pair.get("recipe"), f"{w}.recipe"), f"{w}.recipe"
        )
        for (mname, hp), recipe, seed in itertools.product(pair_methods, pair_recipes, seeds):
            needs = methods.needs_teacher(mname)
            params = methods.resolve(
                mname,
                hp,
                teacher=tinfo["arch"] if needs else None,
                student=student,
                dataset=dataset,
                where=w + ".methods",
            )
            methods.check(mname, params, num_classes=n_classes, where=w + ".methods")
            spec = JobSpec(
                "student",
                {
                    "kind": "student",
                    "dataset": ds,
                    "recipe": recipe,
                    "student": student,
                    "teacher": tinfo if needs else None,
                    "method": {"name": mname, "params": params},
                    "seed": seed,
                },
                depends_on=tjob.hash if (needs and tjob) else None,
            )
            if spec.hash not in seen:  # e.g. vanilla students shared by several teachers
                seen.add(spec.hash)
                specs.append(spec)
    return name, specs
