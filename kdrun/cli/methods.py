"""`kdrun methods [NAME...] [--pair T S] [--dataset D] [--set part.key=value]`.

Without names: the registered methods and how to compose them. With names: each one's
hyperparameters as a job for that pair and dataset would resolve them, and where each value
comes from (method default, the method's default for this pair/dataset, published for this
pair, derived from the base, grid). torch is imported inside the command (a light CLI).
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import yaml
from rich.table import Table

from kdrun.cli.app import app, console
from kdrun.errors import UserError


def _overrides(items: list[str], name: str) -> dict[str, Any]:
    """`--set T=2` (plain method) or `--set kd.T=2` (a part of a composed one)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value (e.g. T=2 or kd.T=2)")
        value = yaml.safe_load(raw)
        if "+" in name:
            part, dot, k = key.partition(".")
            if not dot:
                raise UserError(f"--set {item!r}: {name} is composed; name the part, "
                                f"e.g. {name.split('+')[0]}.{key}={raw}")
            out.setdefault(part, {})[k] = value
        else:
            out[key] = value
    return out


@app.command("methods")
def methods_(
    names: list[str] = typer.Argument(None, help="Methods to explain, e.g. kd+ls dkd+ls"),
    pair: tuple[str, str] = typer.Option(("", ""), "--pair", help="TEACHER STUDENT"),
    dataset: str = typer.Option("cifar100", "--dataset", help="cifar100 | imagenet | ..."),
    overrides: list[str] = typer.Option([], "--set", help="A grid value: key=value"),
) -> None:
    """List the methods, or show each resolved hyperparameter of NAME and its source."""
    from kdrun import methods
    from kdrun.methods.provenance import explain

    if not names:
        t = Table(title="methods (compose as <method>[+<modifier>][+<add-on>], e.g. kd+ls+rkkd)")
        t.add_column("name")
        t.add_column("what")
        for n in sorted(methods.registry._METHODS):
            cls = methods.get(n)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
            t.add_row(n, doc[0] if doc else "")
        console.print(t)
        return
    teacher, student = pair
    if not student:
        raise UserError("--pair TEACHER STUDENT is needed to resolve per-pair settings")
    for name in names:
        rows = explain(name, _overrides(overrides, name), teacher=teacher, student=student,
                       dataset=dataset)
        t = Table(title=f"{name}: {teacher}->{student} on {dataset}")
        for col in ("part", "key", "value", "source"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r["part"], r["key"], repr(r["value"]), r["source"])
        console.print(t)
