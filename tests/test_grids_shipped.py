"""The paper grids shipped with kdrun expand to the published protocols (`--dry-run`)."""

from __future__ import annotations

from collections import Counter

import pytest
from typer.testing import CliRunner

from kdrun import grid
from kdrun.cli import app

CIFAR_PAIRS = {  # RepDistiller / mdistiller's 13 pairs (published_results.yaml)
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
    ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),  # same family
    ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"),
    ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1"),
}
CIFAR_METHODS = {"kd", "dkd", "dist", "kd+ls", "cmkd", "cakd", "rkkd", "kd+rkkd", "dkd+rkkd"}
LADDER_METHODS = {"kd", "dist", "cmkd", "cakd", "rkkd"}
SEEDS = {0, 1, 2}


def plan(name: str):
    _, specs = grid.load(f"grids/{name}.yaml")
    teachers = [s for s in specs if s.kind == "teacher"]
    distilled = [s for s in specs if s.kind == "student" and s.teacher]
    alone = [s for s in specs if s.kind == "student" and not s.teacher]
    return specs, teachers, distilled, alone


def check_full_product(distilled, pairs, methods) -> None:
    got = Counter((s.teacher, s.student, s.method) for s in distilled)
    assert set(got) == {(t, st, m) for t, st in pairs for m in methods}
    assert set(got.values()) == {len(SEEDS)}
    assert {s.seed for s in distilled} == SEEDS


def dry_run(name: str) -> str:
    r = CliRunner().invoke(app, ["enqueue", "--grid", f"grids/{name}.yaml", "--dry-run"],
                           terminal_width=200)
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1].startswith("dry run: nothing written")
    return r.output


def test_cifar_grid_is_the_canonical_benchmark() -> None:
    specs, teachers, distilled, alone = plan("cifar")
    check_full_product(distilled, CIFAR_PAIRS, CIFAR_METHODS)
    assert {t.student for t in teachers} == {t for t, _ in CIFAR_PAIRS}  # each trained once
    assert Counter(s.student for s in alone) == {s: 3 for _, s in CIFAR_PAIRS}
    for s in distilled + alone:
        r = s.config["recipe"]
        small = s.student in ("MobileNetV2", "ShuffleV1", "ShuffleV2")
        assert (r["epochs"], r["batch_size"], r["momentum"], r["weight_decay"]) == (
            240, 64, 0.9, 5e-4)
        assert (r["lr"], r["lr_milestones"], r["lr_gamma"]) == (
            0.01 if small else 0.05, [150, 180, 210], 0.1)
    beta = {(s.teacher, s.student): s.config["method"]["params"]["beta"]
            for s in distilled if s.method == "dkd"}
    assert beta[("resnet56", "resnet20")] == beta[("resnet110", "resnet32")] == 2.0
    assert beta[("vgg13", "vgg8")] == beta[("wrn_40_2", "wrn_16_2")] == 6.0
    assert beta[("resnet32x4", "resnet8x4")] == 8.0
    kd = next(s for s in distilled if s.method == "kd").config["method"]["params"]
    assert (kd["T"], kd["ce_weight"], kd["kd_weight"]) == (4.0, 0.1, 0.9)
    n = len(teachers) + len(alone) + len(distilled)
    assert (len(specs), n) == (6 + 9 * 3 + 13 * 9 * 3, n)
    plan_text = dry_run("cifar")
    assert f"dataset cifar100, {n} jobs" in plan_text
    assert "13 pairs × 10 methods × 3 seeds" in plan_text
    assert f"jobs: 6 teachers trained first, 27 students trained alone, {n - 33} distilled" \
        in plan_text


def test_imagenet_grid() -> None:
    specs, teachers, distilled, alone = plan("imagenet")
    pairs = {("ResNet34", "ResNet18"), ("ResNet50", "MobileNetV1")}
    check_full_product(distilled, pairs, CIFAR_METHODS)
    assert not teachers  # torchvision's pretrained teachers, the papers' ones
    assert {s.config["teacher"]["torchvision"] for s in distilled} == {
        "ResNet34_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V1"}
    assert len(alone) == 2 * 3
    r = distilled[0].config["recipe"]
    assert (r["epochs"], r["lr_milestones"], r["weight_decay"]) == (100, [30, 60, 90], 1e-4)
    assert (r["batch_size"], r["lr"]) in ((256, 0.1), (512, 0.2))
    beta = {s.teacher: s.config["method"]["params"]["beta"] for s in distilled
            if s.method == "dkd"}
    assert beta == {"ResNet34": 0.5, "ResNet50": 2.0}
    kd = next(s for s in distilled if s.method == "kd").config["method"]["params"]
    assert kd["T"] == 1.0
    dry_run("imagenet")  # no weights file needed to plan (nor to enqueue)


@pytest.mark.parametrize("name, student, ladder", [
    ("diminishing", "resnet20",
     ["resnet32", "resnet44", "resnet56", "resnet110", "wrn_40_2", "resnet32x4"]),
])
def test_diminishing_grids(name: str, student: str, ladder: list[str]) -> None:
    specs, teachers, distilled, alone = plan(name)
    check_full_product(distilled, {(t, student) for t in ladder}, LADDER_METHODS)
    assert [t.student for t in teachers] == ladder  # every rung trained, weakest first
    assert {s.student for s in alone} == {student} and len(alone) == 3
    n = len(ladder) * (1 + 5 * 3) + 3
    assert len(specs) == n
    plan_text = dry_run(name)
    assert f", {n} jobs" in plan_text
    assert f"jobs: {len(ladder)} teachers trained first" in plan_text
    assert grid.load(f"grids/{name}.yaml")[0] == "diminishing"  # one name, both ladders


def test_diminishing_imagenet_grid_uses_torchvision_teachers() -> None:
    specs, teachers, distilled, alone = plan("diminishing_imagenet")
    ladder = ["ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152"]
    methods = {"kd", "dist", "cmkd", "rkkd", "kd+rkkd", "dist+rkkd"}
    check_full_product(distilled, {(t, "ResNet18") for t in ladder}, methods)
    assert not teachers and {s.student for s in alone} == {"ResNet18"} and len(alone) == 3
    published = {s.teacher: s.config["teacher"]["published_top1"] for s in distilled}
    assert published == {"ResNet18": 69.758, "ResNet34": 73.314, "ResNet50": 76.13,
                         "ResNet101": 77.374, "ResNet152": 78.312}
    assert grid.load("grids/diminishing_imagenet.yaml")[0] == "diminishing"
    dry_run("diminishing_imagenet")


def test_tiny_imagenet_grid() -> None:
    specs, teachers, distilled, alone = plan("tiny_imagenet")
    pairs = {("resnet32x4", "resnet8x4"), ("vgg13", "vgg8")}
    check_full_product(distilled, pairs, CIFAR_METHODS)
    assert [t.student for t in teachers] == ["resnet32x4", "vgg13"]
    assert specs[0].config["dataset"] == {"name": "tiny_imagenet", "root": "tiny-imagenet-200",
                                          "num_classes": 200, "augment": "crop",
                                          "download": False}
