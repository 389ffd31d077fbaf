"""`--baseline`: which method setting the `delta` table compares with, matched by values.

`kd`, `kd(T=4)`, `kd(T=4.0)` and `kd(recipe.lr=0.05)` name a method and, optionally, some of
its hyperparameters (or `recipe.` keys; a bare recipe key such as `lr` works too). Values are
compared as numbers where they are numbers (`T=4` matches `T=4.0`), and keys not given are
free. Exactly one of the report's method labels must match: when a swept method matches
several (`kd` with T swept), the user is asked to pick one and shown the choices; the other
settings of that method then appear as rows compared with the chosen one.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from kdrun.errors import UserError
from kdrun.params import flatten
from kdrun.report import pairs as P


def parse(spec: str) -> tuple[str, dict[str, Any]]:
    """`kd(T=4, recipe.lr=0.05)` -> ("kd", {"T": 4, "recipe.lr": 0.05})."""
    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    if not spec.endswith(")"):
        raise UserError(f"--baseline {spec!r}: expected METHOD or METHOD(key=value, ...)")
    name, inner = spec[:-1].split("(", 1)
    out: dict[str, Any] = {}
    for item in _split(inner):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--baseline {spec!r}: {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(text.strip())
        except yaml.YAMLError:
            out[key.strip()] = text.strip()
    return name.strip(), out


def _split(inner: str) -> list[str]:
    """Split on top-level commas (a value may be a list: `lr_milestones=[1, 2]`)."""
    parts, depth, cur = [], 0, ""
    for ch in inner:
        depth += (ch in "[{(") - (ch in "]})")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


def same(a: Any, b: Any) -> bool:
    """Equal as values: numbers with a tolerance (4 == 4.0), lists element by element."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


def _matches(params: dict[str, Any], recipe: dict[str, Any], want: dict[str, Any]) -> bool:
    flat = {**flatten(params), **flatten(recipe, "recipe.")}
    for key, value in want.items():
        k = key if key in flat else f"recipe.{key}"
        if k not in flat or not same(flat[k], value):
            return False
    return True


def resolve(jobs: pd.DataFrame, spec: str) -> str:
    """The report label of the distilled jobs that `spec` names (exactly one), else a
    UserError naming the choices."""
    d = P.distilled(jobs)
    labels = list(dict.fromkeys(d["label"]))
    if spec in labels:
        return spec
    name, want = parse(spec)
    mine = d[d["method"] == name]
    hit = [label for label, p, r in zip(mine["label"], mine["params"], mine["recipe"],
                                        strict=True) if _matches(p, r, want)]
    hit = list(dict.fromkeys(hit))
    if len(hit) == 1:
        return hit[0]
    choices = ", ".join(P.order(labels)) or "(none)"
    if not hit:
        raise UserError(f"delta: no {spec!r} jobs to compare with; choose the baseline with "
                        f"--baseline (methods here: {choices})")
    raise UserError(f"--baseline {spec!r} matches {len(hit)} settings: "
                    f"{', '.join(P.order(hit))}; name one, e.g. --baseline '{P.order(hit)[0]}'")
