"""`kdrun enqueue --dry-run`: the plan of a grid as a summary that fits a screen.

pairs × methods × seeds, the recipe and what each pair changes in it, the per-pair method
defaults, and how many jobs are new, already queued or running, finished, or failed/cancelled
in the database (matched by configuration hash, as enqueue matches them). `--jobs` adds one
line per job; `--format json` gives all of it to scripts.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.table import Table
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.labels import job_label
from kdrun.params import flatten
from kdrun.recipe import MILESTONE_FRACTIONS
from kdrun.spec import JobSpec

SHOWN_RECIPE = ("epochs", "batch_size", "lr", "lr_milestones", "lr_gamma", "weight_decay")


def db_states(db: Database, hashes: Iterable[str]) -> dict[str, str]:
    """hash -> state of the jobs already in the database."""
    hs = list(hashes)
    out: dict[str, str] = {}
    with db.read() as s:
        for i in range(0, len(hs), 500):
            rows = s.execute(select(Job.hash, Job.state).where(Job.hash.in_(hs[i:i + 500])))
            out.update({h: st for h, st in rows})
    return out


def _pair(sp: JobSpec) -> str:
    return f"{sp.teacher}->{sp.student}"


def _label(sp: JobSpec) -> str:
    return getattr(sp, "label", None) or job_label(sp.config)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "/".join(map(_fmt, v))
    return str(v)


def _diff(recipe: dict[str, Any], base: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in recipe.items() if base.get(k) != v)


def _key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def summary(specs: list[JobSpec], states: dict[str, str] | None) -> dict[str, Any]:
    """The plan's facts (what the text and the JSON show)."""
    students = [sp for sp in specs if sp.kind == "student"]
    distilled = [sp for sp in students if sp.teacher]
    pairs = list(dict.fromkeys(_pair(sp) for sp in distilled))
    methods = list(dict.fromkeys(sp.method for sp in students))
    seeds = sorted({sp.seed for sp in specs if sp.kind == "student"})
    recipes = Counter(_key(sp.config["recipe"]) for sp in students)
    base = json.loads(recipes.most_common(1)[0][0]) if recipes else {}
    # what each pair (and the students trained alone for it) changes in the common recipe
    pair_recipe: dict[str, str] = {}
    for sp in distilled:
        d = _diff(sp.config["recipe"], base)
        if d:
            pair_recipe.setdefault(_pair(sp), d)
    teacher_recipe = {sp.student: _diff(sp.config["recipe"], base) for sp in specs
                      if sp.kind == "teacher"}
    # method hyperparameters that differ between pairs but not within one: per-pair defaults
    per_pair: dict[str, dict[str, set[str]]] = {}
    for m in methods:
        mine = [sp for sp in distilled if sp.method == m]
        flats = [(_pair(sp), flatten(sp.config["method"]["params"])) for sp in mine]
        for k in sorted(set().union(*[f for _, f in flats])) if flats else []:
            by_pair: dict[str, set[str]] = {}
            for p, f in flats:
                by_pair.setdefault(p, set()).add(_fmt(f.get(k)))
            if len({v for vs in by_pair.values() for v in vs}) > 1 and all(
                    len(vs) == 1 for vs in by_pair.values()):
                values: dict[str, set[str]] = {}
                for p, vs in by_pair.items():
                    values.setdefault(next(iter(vs)), set()).add(p)
                per_pair.setdefault(m, {})[k] = {v: ps for v, ps in values.items()}
    settings = {p: len({(sp.method, _key(sp.config["method"]["params"]),
                         _key(sp.config["recipe"])) for sp in distilled if _pair(sp) == p})
                for p in pairs}
    db: dict[str, int] | None = None
    if states is not None:
        got = [states.get(sp.hash) for sp in specs]
        db = {"new": sum(s is None for s in got),
              "queued": sum(s in ("queued", "running") for s in got),
              "finished": sum(s == "succeeded" for s in got),
              "failed_or_cancelled": sum(s in ("failed", "cancelled") for s in got)}
    return {
        "jobs": len(specs), "teachers": sum(sp.kind == "teacher" for sp in specs),
        "students_alone": len(students) - len(distilled), "distilled": len(distilled),
        "pairs": pairs, "methods": methods, "seeds": seeds,
        "settings_per_pair": settings, "recipe": base,
        "pair_recipe_overrides": pair_recipe,
        "teacher_recipe_overrides": {t: d for t, d in teacher_recipe.items() if d},
        "per_pair_method_defaults": {m: {k: {v: sorted(ps) for v, ps in vals.items()}
                                         for k, vals in ks.items()}
                                     for m, ks in per_pair.items()},
        "database": db,
    }


def _wrap(text: str, width: int = 79) -> list[str]:
    return textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="      ",
                         break_on_hyphens=False)


def lines(name: str, source: str, specs: list[JobSpec], states: dict[str, str] | None,
          db_url: str) -> list[str]:
    """The plan as short lines of text, wrapped to 79 columns."""
    s = summary(specs, states)
    dataset = specs[0].dataset if specs else "?"
    out = [f"grid {name} ({source}): dataset {dataset}, {s['jobs']} jobs"]
    alone = int(s["students_alone"] > 0)  # the student trained alone is a row of each pair
    settings = {n + alone for n in s["settings_per_pair"].values()}
    if not settings or settings == {len(s["methods"])}:
        per = f"{len(s['methods'])} methods"
    else:
        lo, hi = min(settings), max(settings)
        per = f"{lo if lo == hi else f'{lo}-{hi}'} method settings (sweeps)"
    npairs = len(s["pairs"])
    out += _wrap(f"{npairs} pair{'s' if npairs != 1 else ''} × {per} × {len(s['seeds'])} seeds "
                 f"({', '.join(map(str, s['seeds']))})")
    out += _wrap(f"methods: {', '.join(s['methods'])}")
    nt = s["teachers"]
    out += _wrap(f"jobs: {nt} teacher{'s' if nt != 1 else ''} trained first, "
                 f"{s['students_alone']} students trained alone, {s['distilled']} distilled")
    r = s["recipe"]
    if r:
        pct = "/".join(f"{f * 100:g}" for f in MILESTONE_FRACTIONS) + "%"
        out += _wrap(f"recipe: {r['epochs']} epochs, batch {r['batch_size']}, lr "
                     f"{_fmt(r['lr'])} ×{_fmt(r['lr_gamma'])} at epochs "
                     f"{_fmt(r['lr_milestones'])}, weight decay {_fmt(r['weight_decay'])}"
                     + (f", each job on {r['gpus']} GPUs (DDP, batch {r['batch_size']} in all)"
                        if r.get("gpus", 1) > 1 else ""))
        out += _wrap(f"(a recipe with epochs but no lr_milestones decays at {pct} of its "
                     "epochs, as 150/180/210 of 240)")
    groups: dict[str, list[str]] = {}
    for p, d in s["pair_recipe_overrides"].items():
        groups.setdefault(d, []).append(p)
    for d, ps in groups.items():
        out += _wrap(f"per-pair recipe: {d} for {', '.join(ps)}")
    for t, d in s["teacher_recipe_overrides"].items():
        out += _wrap(f"teacher {t}: {d}")
    for m, ks in s["per_pair_method_defaults"].items():
        for k, vals in ks.items():
            out += _wrap(f"per-pair default {m} {k}: " + ", ".join(
                f"{v} ({len(ps)} pair{'s' if len(ps) > 1 else ''})" for v, ps in vals.items()))
    db = s["database"]
    if db is None:
        out += _wrap(f"database {db_url}: not created yet, all {s['jobs']} jobs are new")
    else:
        out += _wrap(f"database {db_url}: {db['new']} new, {db['queued']} already queued or "
                     f"running, {db['finished']} finished, {db['failed_or_cancelled']} failed "
                     "or cancelled (left as they are)")
    return out


def jobs_table(specs: list[JobSpec], states: dict[str, str] | None) -> Table:
    """One line per job: number, database state (or new), label, epochs."""
    t = Table(box=None, pad_edge=False)
    for col, just in (("#", "right"), ("db", "left"), ("job", "left"), ("epochs", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for i, sp in enumerate(specs, 1):
        state = (states or {}).get(sp.hash, "new")
        t.add_row(str(i), state, _label(sp), str(sp.config["recipe"]["epochs"]))
    return t


def to_json(name: str, specs: list[JobSpec], states: dict[str, str] | None) -> str:
    jobs = [{"hash": sp.hash, "kind": sp.kind, "label": _label(sp), "teacher": sp.teacher,
             "student": sp.student, "method": sp.method, "seed": sp.seed,
             "params": sp.config["method"]["params"], "recipe": sp.config["recipe"],
             "db_state": (states or {}).get(sp.hash)} for sp in specs]
    return json.dumps({"grid": name, "summary": summary(specs, states), "jobs": jobs},
                      indent=2, default=str) + "\n"
