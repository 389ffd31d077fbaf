"""`kdrun models`: the model zoo with parameter counts and MACs at native resolution."""

from __future__ import annotations

import typer
from rich.table import Table

from kdrun.cli.app import app, console
from kdrun.errors import UserError


def _si(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@app.command("models")
def models_(
    dataset: str = typer.Option(None, "--dataset", help="One zoo: cifar100 | imagenet"),
) -> None:
    """List the model zoo: name, dataset, parameters, MACs (conv + linear) per image."""
    from kdrun.models.profile import NATIVE_SIZE, zoo_table  # torch: only for this command
    from kdrun.models.registry import ZOOS

    if dataset is not None and dataset not in ZOOS:
        raise UserError(f"--dataset {dataset!r}: valid zoos are {', '.join(ZOOS)}")
    rows = zoo_table(dataset)
    t = Table(title="model zoo (MACs at the native resolution: "
              + ", ".join(f"{z} {s}x{s}" for z, s in NATIVE_SIZE.items()) + ")")
    for col in ("name", "dataset", "params", "MACs"):
        t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in rows:
        t.add_row(r["name"], r["dataset"], _si(r["params"]), _si(r["macs"]))
    console.print(t)
