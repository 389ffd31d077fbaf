"""`kdrun enqueue --set KEY=VALUE`: change a grid from the command line, Hydra-style.

KEY is a dotted path into the grid's YAML (`recipe.epochs`, `seeds`, `pairs.0.recipe.lr`,
`teachers.resnet56.recipe.epochs`); VALUE is parsed as YAML (`1`, `[0]`, `0.01`, `{T: [2, 4]}`),
so an override means exactly what the same text would mean in the file. Missing mappings on
the way are created; the grid is validated afterwards as if it had been written that way.

Setting a recipe's `epochs` without its `lr_milestones` drops the milestones that recipe
gave, so they default to the same fractions of the new epochs as 150/180/210 of 240
(`kdrun.recipe.default_milestones`): `--set recipe.epochs=2` works on a 240-epoch grid.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from kdrun.errors import UserError

Override = tuple[list[str], Any, str]  # path, value, the original text


def parse(items: Iterable[str]) -> list[Override]:
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not key.strip() or any(not p for p in path):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY, "
                            "e.g. --set recipe.epochs=1 or --set seeds=[0]")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise UserError(f"--set {item!r}: the value is not valid YAML "
                            f"({getattr(e, 'problem', e)})") from None
        out.append((path, value, item))
    return out


def apply(raw: Any, overrides: list[Override]) -> Any:
    """A copy of the grid's YAML document with every override applied, in order."""
    if not overrides:
        return raw
    doc = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(doc, dict):
        raise UserError("--set: the grid file is not a mapping of keys")
    milestone_paths = {tuple(path) for path, _, _ in overrides if path[-1] == "lr_milestones"}
    for path, value, item in overrides:
        node: Any = doc
        for i, part in enumerate(path[:-1]):
            node = _child(node, part, path[: i + 1], item)
        _assign(node, path[-1], value, item)
        if path[-1] == "epochs" and isinstance(node, dict) and \
                tuple([*path[:-1], "lr_milestones"]) not in milestone_paths:
            node.pop("lr_milestones", None)  # default to the same fractions of the new epochs
    return doc


def _child(node: Any, part: str, where: list[str], item: str) -> Any:
    if isinstance(node, list):
        idx = _index(node, part, where, item)
        if node[idx] is None:
            node[idx] = {}
        return node[idx]
    if not isinstance(node, dict):
        raise UserError(f"--set {item!r}: {'.'.join(where[:-1])} is {node!r}, not a mapping")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _assign(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, [part], item)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise UserError(f"--set {item!r}: cannot set {part!r} inside {node!r}")


def _index(node: list, part: str, where: list[str], item: str) -> int:
    try:
        idx = int(part)
        node[idx]
    except (ValueError, IndexError):
        raise UserError(f"--set {item!r}: {'.'.join(where)}: expected an index 0.."
                        f"{len(node) - 1} into the list") from None
    return idx
