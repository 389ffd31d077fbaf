"""Light commands import only what they use: `kdrun --help` imports no database or data
library, `status`, `report`, `export` and `enqueue` never import torch or torchvision
(seconds and most of a gigabyte per command), the worker's supervisor imports torch only to
list GPUs, and the training process imports no database code. See kdrun.lazy,
kdrun.cli.commands and the torch-free catalogs (kdrun.methods.catalog, kdrun.data.catalog,
kdrun.models.registry.NAMES)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import typer

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.grid import expand
from tests.helpers import tiny_grid, write_grid

WATCHED = ("torch", "torchvision", "torch._dynamo", "pandas", "numpy", "sqlalchemy", "alembic")
TORCH = {"torch", "torchvision", "torch._dynamo"}

# Runs the CLI in-process, then reports which watched modules got imported.
PROBE = """
import json, sys
from kdrun.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in WATCHED if m in sys.modules)))
""".replace("WATCHED", repr(WATCHED))


def imported_by(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                       timeout=120)
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_light_commands_never_import_torch(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "tiny", expand(tiny_grid())[1])
    base = ["--db", url, "--runs-dir", str(tmp_path / "runs")]
    assert imported_by("--help") == set()  # no sqlalchemy, alembic, pandas, numpy either
    assert imported_by(*base, "status") & (TORCH | {"pandas", "alembic"}) == set()
    assert "alembic" not in imported_by(*base, "report", "--table", "top1")  # schema current
    # report checks its flags without pandas (kdrun.report.choices): the curves table's
    # read-ahead (kdrun.report.ahead) starts before pandas loads
    assert imported_by(*base, "report", "--table", "nope") & {"pandas", *TORCH} == set()
    for args in (["status", "--json"], ["report", "--table", "top1"],
                 ["report", "--table", "curves"], ["export", "--format", "json"]):
        assert imported_by(*base, *args) & TORCH == set(), args
    grid = write_grid(tmp_path / "g.yaml", tiny_grid(seeds=[0, 1, 2]))
    for extra in (["--dry-run"], []):  # grid validation and expansion need no torch
        assert imported_by(*base, "enqueue", "--grid", str(grid), *extra) & TORCH == set()


def test_training_process_imports_no_database_code():
    code = ("import json, sys; import kdrun.worker.child; "
            f"print(json.dumps(sorted(m for m in {WATCHED!r} if m in sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # torch is what it is for; torchvision only when a transform is built, dynamo at the
    # optimizer's creation; never the database or pandas
    assert set(json.loads(r.stdout.strip().splitlines()[-1])) <= {"torch", "numpy"}


def test_help_lists_every_command_without_importing_it():
    """kdrun.cli.commands is the help `kdrun --help` shows: it must say what the modules do."""
    from kdrun.cli import app
    from kdrun.cli.app import DEFAULT_DB, _Listed
    from kdrun.cli.commands import COMMANDS, MODULES
    from kdrun.db.engine import DEFAULT_DB as ENGINE_DEFAULT

    assert DEFAULT_DB == ENGINE_DEFAULT
    for module in MODULES:
        importlib.import_module(f"kdrun.cli.{module}")
    real = typer.main.get_command(app).commands
    assert not any(isinstance(c, _Listed) for c in real.values())
    assert [name for name, _, _ in COMMANDS] == list(real)  # every command, in order
    for name, module, text in COMMANDS:
        cmd = real[name]
        callback = cmd.callback if cmd.callback else next(iter(cmd.commands.values())).callback
        assert callback.__module__ == f"kdrun.cli.{module}", name
        first = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert first == text, name


def test_catalogs_match_what_registers():
    """The torch-free names and configs a grid is checked against are exactly what the
    torch modules register: models, datasets and methods."""
    from kdrun import data, methods, models
    from kdrun.data import registry as data_registry
    from kdrun.data.catalog import DATASETS
    from kdrun.methods import catalog
    from kdrun.models import registry as model_registry

    model_registry.load_zoos()
    assert sorted(model_registry._MODELS) == sorted(
        (z, n) for z in model_registry.ZOOS for n in model_registry.NAMES[z])
    for name, (params, _) in DATASETS.items():
        assert data_registry.entry(name).params is params
    assert data.available() == sorted(DATASETS)
    for name in methods.available():
        spec, loss = methods.spec(name), methods.get(name)
        assert loss.name == name and loss.needs_teacher == spec.needs_teacher
        assert [f.name for f in dataclasses.fields(loss.Params)] == \
            [f.name for f in dataclasses.fields(spec.Params)]
        if not name.count("+"):
            assert issubclass(loss, spec)
    assert {c.name for c in catalog.METHODS} | {c.name for c in catalog.MODIFIERS} == \
        set(catalog.MODULES)
    assert models.available("cifar100") == sorted(model_registry.NAMES["cifar100"])
