"""`kdrun teacher import|list|cache`: the registry of teacher checkpoints grids can name, and
their exact logit caches."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml
from rich.table import Table

from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError

if TYPE_CHECKING:
    import torch

teacher_app = typer.Typer(help="Teacher checkpoints: import published ones, list the registry, "
                          "build logit caches.")
app.add_typer(teacher_app, name="teacher")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _short(path: str) -> str:
    """A path as the shorter of absolute and relative to the working directory."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return rel if len(rel) < len(path) else path


def _device(spec: str | None) -> torch.device:
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine; use cpu")
    return dev


@teacher_app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A checkpoint file, or a directory / .tar in the "
                                "cifar_teachers layout (<arch>_vanilla/ckpt_epoch_240.pth)"),
    arch: str = typer.Option(None, "--arch", help="Architecture (default: from the folder name, "
                             "else the zoo model the weights fit)"),
    dataset: str = typer.Option("cifar100", "--dataset", help="cifar100 | imagenet | synthetic"),
    name: str = typer.Option(None, "--name", help="Registry name, what grids' `registered:` "
                             "refers to (default: the architecture)"),
    evaluate: bool = typer.Option(True, "--eval/--no-eval",
                                  help="Measure test top-1/top-5 when the dataset is present"),
    download: bool = typer.Option(False, "--download", help="Fetch a missing dataset to evaluate"),
    device: str = typer.Option(None, "--device", help="Evaluate on cpu | cuda | cuda:N "
                               "(default: cuda when available)"),
) -> None:
    """Verify checkpoints strictly against their architecture and register them."""
    from kdrun import teachers
    from kdrun.db import migrate

    settings: Settings = ctx.obj
    dev = _device(device)
    db = settings.open(create=True, check=False)
    if migrate.current(db) is None:  # a new database: create the schema
        migrate.upgrade(db)
    migrate.require_current(db)
    rows, note = teachers.import_teachers(
        db, path, runs_dir=settings.runs_dir, data_dir=settings.data_dir, dataset=dataset,
        arch=arch, name=name, evaluate=evaluate, device=dev, download=download)
    for r in rows:
        console.print(f"{r.status} [bold]{r.name}[/] ({r.arch}, {r.dataset}): top-1 "
                      f"{_pct(r.top1)}, top-5 {_pct(r.top5)}, sha256 {r.sha256[:12]}, "
                      f"{_short(r.path)}", soft_wrap=True, highlight=False)
    if note:
        console.print(f"accuracy not measured: {note}", soft_wrap=True, highlight=False)


@teacher_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Registered teachers (imported, trained, fetched) and torchvision's pretrained ImageNet
    weights that grids can name with `torchvision: WEIGHTS`."""
    from kdrun import teachers

    try:
        rows = teachers.list_teachers(ctx.obj.open())
    except UserError as e:
        rows = []
        console.print(f"registry: {e}", soft_wrap=True, highlight=False)
    if not rows:
        console.print("no teachers registered (see `kdrun teacher import` / `teacher fetch`)")
    else:
        t = Table(title=f"{len(rows)} registered teachers")
        for col in ("name", "arch", "dataset", "top-1", "top-5", "source", "sha256", "path"):
            t.add_column(col, overflow="fold", ratio=1 if col == "path" else None)
        for r in rows:
            source = r.source + (f" (job {r.job_id})" if r.job_id else "")
            t.add_row(r.name, r.arch, f"{r.dataset} ({r.num_classes})", _pct(r.top1),
                      _pct(r.top5), source, r.sha256[:8], _short(r.path))
        console.print(t)
    console.print(_torchvision_table())


def _torchvision_table() -> Table:
    from kdrun import pretrained

    t = Table(title="torchvision pretrained weights (grid: `ARCH: {torchvision: WEIGHTS}`; "
              f"cache {_short(str(pretrained.hub_dir()))})")
    for col in ("arch", "weights", "published top-1", "top-5", "source", "file", "in cache"):
        t.add_column(col, overflow="fold")
    for arch in pretrained.BUILDERS:
        for w in pretrained.choices(arch)[:-1]:  # DEFAULT is one of these
            info = pretrained.resolve(arch, w)
            t.add_row(arch, w, _pct(info["published_top1"]), _pct(info["published_top5"]),
                      "torchvision", info["file"],
                      "yes" if pretrained.path_of(info).is_file() else "no")
    return t


@teacher_app.command("fetch")
def fetch(
    ctx: typer.Context,
    archs: list[str] = typer.Argument(None, help="ImageNet architectures (ResNet18, ResNet34, "
                                      "ResNet50, ResNet101, ResNet152)"),
    weights: str = typer.Option("IMAGENET1K_V1", "--weights", help="torchvision weights value "
                                "(IMAGENET1K_V1: the weights the KD papers used; DEFAULT: "
                                "torchvision's best)"),
    grid: str = typer.Option(None, "--grid", help="Fetch every torchvision teacher of a grid"),
) -> None:
    """Download torchvision's pretrained weights into torch's hub cache ahead of the jobs,
    verify them and register them (source torchvision) with their sha256."""
    from kdrun import pretrained, teachers
    from kdrun.db import migrate

    wanted = [pretrained.resolve(a, weights, "--weights") for a in archs or []]
    if grid:
        from kdrun import grid as grid_mod

        _, specs = grid_mod.load(grid, teacher_lookup=teachers.registry_lookup(
            ctx.obj.open, ctx.obj.runs_dir))
        wanted += [s.config["teacher"] for s in specs
                   if (s.config.get("teacher") or {}).get("torchvision")]
    if not wanted:
        raise UserError("name architectures (e.g. ResNet34) or a --grid with torchvision "
                        "teachers")
    todo = list({i["torchvision"]: i for i in wanted}.values())
    db = ctx.obj.open(create=True, check=False)
    if migrate.current(db) is None:  # a new database: create the schema
        migrate.upgrade(db)
    migrate.require_current(db)
    for info in todo:
        p = pretrained.path_of(info)
        had = p.is_file()
        if not had:
            console.print(f"downloading {info['url']} -> {_short(str(p))}", soft_wrap=True,
                          highlight=False)
        p, digest = pretrained.locate(info, download=True)
        row = teachers.register_pretrained(db, info, p, digest)
        console.print(f"{'in cache' if had else 'fetched'} {info['torchvision']} "
                      f"({row.status} as {row.name}): published top-1 "
                      f"{_pct(info['published_top1'])}, sha256 {digest[:12]}, {_short(str(p))}",
                      soft_wrap=True, highlight=False)


def _dataset_config(name: str, num_classes: int, options: list[str]) -> dict:
    """The dataset's default config with `key=value` overrides (values parsed as YAML)."""
    from kdrun import data

    cfg: dict = {"name": name}
    if name == "synthetic":
        cfg["num_classes"] = num_classes
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise UserError(f"--data-option {opt!r}: expected KEY=VALUE")
        cfg[key] = yaml.safe_load(value)
    cfg = data.resolve(cfg, "--data-option")
    if data.num_classes(cfg) != num_classes:
        raise UserError(f"the teacher has {num_classes} classes, the dataset "
                        f"{data.num_classes(cfg)}")
    return cfg


@teacher_app.command("cache")
def cache(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A registered teacher (see `kdrun teacher list`)"),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp16|fp32",
                              help="fp16 (alias bf16): logits of the bf16-autocast teacher, "
                              "for jobs with amp on; fp32: for jobs with amp off; auto: fp16 "
                              "on cuda, fp32 on cpu (as jobs' amp: auto)"),
    data_option: list[str] = typer.Option([], "--data-option", "-o", help="KEY=VALUE of the "
                                          "dataset config, as in the grid (e.g. val_split=5000); "
                                          "default: the dataset's defaults"),
    device: str = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: cuda "
                               "when available)"),
    download: bool = typer.Option(False, "--download", help="Fetch a missing dataset"),
) -> None:
    """Build a registered teacher's exact logit cache ahead of the jobs that would build it.

    The cache holds the teacher's logits for all 162 crop+flip views of every training image,
    under the runs directory. A job finds it when its dataset config gives the same training
    images and its amp setting the same dtype; otherwise its first job builds its own."""
    from kdrun import checkpoints, data, models, teachers
    from kdrun.data.device_loader import DeviceLoader
    from kdrun.data.loaders import on_device
    from kdrun.train import fast, teacher_cache

    settings: Settings = ctx.obj
    dev = _device(device)
    if dtype == "auto":
        dtype = "fp16" if dev.type == "cuda" else "fp32"
    dtype = {"bf16": "fp16"}.get(dtype, dtype)  # the amp setting's name for the same cache
    if dtype not in ("fp16", "fp32"):
        raise UserError(f"--dtype {dtype!r}: expected auto, fp16 (alias bf16) or fp32")
    t = teachers.registry_lookup(settings.open, settings.runs_dir)(name)
    ds_cfg = _dataset_config(t["dataset"], t["num_classes"], data_option)
    splits = data.load(ds_cfg, settings.data_dir, download=download)
    if not on_device(splits.train):
        raise UserError(f"{t['dataset']}: the cache needs the CIFAR crop+flip pipeline on "
                        "in-memory 32x32 images (cifar100, synthetic)")
    speed = fast.Speed(dev, amp=dtype == "fp16", channels_last=dev.type == "cuda")
    model = models.create(t["arch"], num_classes=t["num_classes"], dataset=t["dataset"])
    sd = checkpoints.extract_state_dict(checkpoints.load(t["path"]), t["path"])
    checkpoints.load_into(model, sd, f"teacher {name}")
    speed.prepare(model).eval()
    loader = DeviceLoader.from_dataset(splits.train, 256, device=dev, train=False)
    spec = teacher_cache.CacheSpec(t["sha256"], teacher_cache.data_hash(splits.train),
                                   loader.padding, dtype)  # type: ignore[arg-type]
    path = settings.runs_dir / teacher_cache.DIR / spec.filename
    t0 = time.perf_counter()
    built = teacher_cache.ensure(
        path, lambda tmp: teacher_cache.build(model, loader, tmp, spec.dtype, speed),
        {"teacher": name, "teacher_sha256": t["sha256"], "dataset": ds_cfg,
         "images": len(splits.train), "dtype": dtype, "padding": loader.padding},
        log=lambda m: console.print(f"teacher cache: {m}", highlight=False, soft_wrap=True))
    size = path.stat().st_size / 2**20
    what = f"built in {time.perf_counter() - t0:.1f} s" if built else "already built"
    console.print(f"{what}: {_short(str(path))} ({size:,.1f} MiB, {len(splits.train)} images x "
                  f"{teacher_cache.views_per_image(loader.padding)} views, {dtype})",
                  soft_wrap=True, highlight=False)
