"""Grid files: YAML -> validated, expanded list of JobSpecs.

A grid names a dataset, a recipe, teachers, teacher->student pairs, methods and seeds. Any
hyperparameter given as a list is a sweep (one job per value), except fields that are
themselves lists (e.g. `lr_milestones`), which sweep only when given a list of lists.
Every mistake raises a UserError naming the file, the key path and the valid choices.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kdrun import labels, teacher_sources, trackers
from kdrun.errors import UserError
from kdrun.lazy import lazy
from kdrun.overrides import apply as apply_overrides
from kdrun.overrides import parse as parse_overrides
from kdrun.params import as_dict, build, field_types, is_list_type
from kdrun.recipe import Recipe, default_milestones
from kdrun.spec import JobSpec, shared_parts

# The registries (torch-free: names, configs, hyperparameters) load when a grid is expanded.
data, methods, models = lazy("kdrun.data"), lazy("kdrun.methods"), lazy("kdrun.models")

GRID_KEYS = ("name", "dataset", "recipe", "teachers", "pairs", "methods", "seeds")
PAIR_KEYS = ("teacher", "student", "recipe", "methods")
TEACHER_PRIORITY = teacher_sources.TEACHER_PRIORITY
TeacherLookup = teacher_sources.TeacherLookup


def resolve_path(path: str | Path) -> Path:
    """A grid path on disk, or else the grid of that name shipped inside kdrun."""
    p = Path(path)
    bare = p.suffix not in (".yaml", ".yml") and p.parent == Path(".")
    if p.is_file() or (p.exists() and not bare):
        return p
    name = f"{p.name}.yaml" if bare else p.name
    shipped = resources.files("kdrun") / "grids" / name
    if (bare or p.suffix in (".yaml", ".yml")) and shipped.is_file():
        return Path(str(shipped))  # `grids/NAME.yaml`, or a bare `NAME` (even beside a
        # folder of that name, such as the quickstart's output folder)
    if p.exists():
        return p
    raise UserError(f"grid file {path} not found; shipped grids: "
                    f"{', '.join(n + '.yaml' for n in shipped_grids())}")


def shipped_grids() -> list[str]:
    """Names of the grids shipped inside kdrun (`kdrun grids`, `--grid NAME`)."""
    folder = resources.files("kdrun") / "grids"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def load(
    path: str | Path, teacher_lookup: TeacherLookup | None = None,
    overrides: Sequence[str] = (),
) -> tuple[str, list[JobSpec]]:
    """Read and expand a grid file: (grid name, job specs in enqueue order).
    `teacher_lookup` resolves `registered:` teachers; without it they are an error.
    `overrides`: `KEY=VALUE` texts of `--set` (kdrun.overrides), applied before validation."""
    p = resolve_path(path)
    if p.is_dir():
        found = sorted(x.name for x in p.glob("*.y*ml"))
        raise UserError(f"--grid {path}: is a folder, not a grid file"
                        + (f"; grid files in it: {', '.join(found)}" if found else ""))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise UserError(f"{p}: line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                        "save the grid as UTF-8") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read the grid: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    raw = apply_overrides(raw, parse_overrides(overrides))
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
        return sweep(hp, field_types(methods.spec(name).Params))
    # Composed method: hyperparameters per part, each part swept independently.
    per_part = {}
    for part, values in hp.items():
        types = field_types(methods.spec(part).Params) if part in methods.available() else {}
        per_part[part] = sweep(values, types) if isinstance(values, dict) else [values]
    keys = list(per_part)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*per_part.values())]


def _recipe(base: dict[str, Any], override: Any, where: str) -> dict[str, Any]:
    if override is not None and not isinstance(override, dict):
        raise UserError(f"{where}: expected a mapping of recipe keys")
    merged = {**base, **(override or {})}
    if override and "epochs" in override and "lr_milestones" not in override:
        merged.pop("lr_milestones", None)  # new epochs: milestones default to its fractions
    return merged


def expand(
    raw: Any,
    default_name: str = "grid",
    teacher_lookup: TeacherLookup | None = None,
) -> tuple[str, list[JobSpec]]:
    with shared_parts():  # jobs share their dataset/recipe/teacher dicts: hash each once
        return _expand(raw, default_name, teacher_lookup)


def _expand(raw: Any, default_name: str,
            teacher_lookup: TeacherLookup | None) -> tuple[str, list[JobSpec]]:
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
    tracker = trackers.parse(base_recipe.pop("tracker", None), "recipe.tracker")

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
            if "epochs" in r and "lr_milestones" not in r:
                r["lr_milestones"] = default_milestones(r["epochs"])
            out.append(as_dict(build(Recipe, r, where)))
        return out

    # Teachers: one resolver per source (train, checkpoint, registered, torchvision).
    teachers = teacher_sources.resolve_all(g.get("teachers"), teacher_sources.Context(
        ds, arch_ok, lambda o, w: recipes(_recipe(base_recipe, o, w), w), teacher_lookup))
    specs: list[JobSpec] = [t.job for t in teachers.values() if t.job is not None]

    pairs = g["pairs"]
    if not isinstance(pairs, list) or not pairs:
        raise UserError("pairs: expected a non-empty list of {teacher: NAME, student: ARCH}")
    default_methods = _method_entries(g["methods"], "methods")
    seen: set[str] = {s.hash for s in specs}
    explicit: dict[str, list[str]] = {}  # spec hash -> method keys the grid wrote out
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
        tinfo, tjob = teachers[tname].info, teachers[tname].job
        pair_methods = (
            _method_entries(pair["methods"], f"{w}.methods")
            if "methods" in pair
            else default_methods
        )
        # a top-level method's bad value is reported at `methods`, where it was written
        mwhere = f"{w}.methods" if "methods" in pair else "methods"
        pair_recipes = recipes(
            _recipe(base_recipe, pair.get("recipe"), f"{w}.recipe"), f"{w}.recipe"
        )
        resolved = []  # a method's parameters depend on the pair, not on recipe or seed
        for mname, hp in pair_methods:
            needs = methods.needs_teacher(mname)
            params = methods.resolve(
                mname,
                hp,
                teacher=tinfo["arch"] if needs else None,
                student=student,
                dataset=dataset,
                where=mwhere,
            )
            methods.check(mname, params, num_classes=n_classes, where=mwhere)
            shown = list(labels.values({"method": {"params": hp}, "recipe": {}}))
            # one dict for all of its jobs: the hash encodes it once (kdrun.spec's memo)
            resolved.append((needs, {"name": mname, "params": params}, shown))
        for (needs, method, shown), recipe, seed in itertools.product(
            resolved, pair_recipes, seeds
        ):
            spec = JobSpec(
                "student",
                {
                    "kind": "student",
                    "dataset": ds,
                    "recipe": recipe,
                    "student": student,
                    "teacher": tinfo if needs else None,
                    "method": method,
                    "seed": seed,
                },
                depends_on=tjob.hash if (needs and tjob) else None,
            )
            if spec.hash not in seen:  # e.g. vanilla students shared by several teachers
                seen.add(spec.hash)
                specs.append(spec)
                explicit[spec.hash] = shown
    labels.assign(specs, explicit)
    for sp in specs if tracker else ():  # not part of the hash (kdrun.spec.UNHASHED)
        sp.config["tracker"] = tracker
    return name, specs
