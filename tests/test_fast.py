"""Speed switches: how they resolve, that off means the plain step, that they are recorded."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from sqlalchemy import select

from kdrun import checkpoints, methods, models
from kdrun.db import migrate
from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.errors import ConfigError, UserError
from kdrun.grid import expand
from kdrun.recipe import Recipe
from kdrun.train import fast
from kdrun.train.step import LiveTeacher, Step
from kdrun.train.trainer import Hooks, Run, note_switches, recorded_switches, train
from tests.helpers import tiny_grid

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_on_on_cuda_and_off_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert fast.resolve(Recipe(), CPU) == fast.Speed(CPU)
    assert fast.resolve(Recipe(), CUDA) == fast.Speed(CUDA, amp=True, channels_last=True,
                                                      compile=True)
    on = Recipe(amp="bf16", channels_last="on", compile="on")
    assert fast.resolve(on, CPU) == fast.Speed(CPU, True, True, True)
    off = Recipe(amp="off", channels_last="off", compile="off")
    assert fast.resolve(off, CUDA) == fast.Speed(CUDA)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)  # emulated only
    assert not fast.resolve(Recipe(), CUDA).amp  # auto: no bf16 on pre-Ampere GPUs
    assert fast.resolve(Recipe(amp="bf16"), CUDA).amp  # asked for: asked for
    with pytest.raises(ConfigError, match="recipe.amp: 'fp8'"):
        fast.resolve(Recipe(amp="fp8"), CPU)  # type: ignore[arg-type]
    assert fast.Speed(CUDA, True, False, True).record() == {
        "device": "cuda", "amp": "bf16", "channels_last": False, "compile": True}


def test_switches_are_part_of_the_job_config_and_validated():
    base = {s.hash for s in expand(tiny_grid())[1]}
    off = {s.hash for s in expand(tiny_grid(recipe={"epochs": 2, "lr_milestones": [1],
                                                    "compile": "off"}))[1]}
    assert base.isdisjoint(off)
    spec = expand(tiny_grid())[1][0]
    assert {k: spec.config["recipe"][k] for k in ("amp", "channels_last", "compile",
                                                  "teacher_cache")} == dict.fromkeys(
        ("amp", "channels_last", "compile", "teacher_cache"), "auto")
    with pytest.raises(UserError, match="teacher_cache"):
        expand(tiny_grid(recipe={"epochs": 2, "lr_milestones": [1], "teacher_cache": "yes"}))


def test_step_with_switches_off_is_the_plain_fp32_step():
    torch.manual_seed(0)
    student, teacher = models.create("resnet8", num_classes=5), models.create("resnet8", 5)
    teacher.eval()
    ref = copy.deepcopy(student)
    method = methods.create("kd", T=4.0)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    speed = fast.Speed(CPU)
    step = Step(student, LiveTeacher(teacher, speed, 8), method, opt, speed, 8)
    g = torch.Generator().manual_seed(0)
    for n in (8, 8, 3):  # full batches and the smaller last one
        x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 5, (n,), generator=g)
        loss, comps, logits = step(x, y, None, epoch=1)
        ref_logits = ref(x)  # the loop as written before the switches existed
        with torch.inference_mode():
            t = teacher(x)
        ref_loss, _ = method(ref_logits, t.clone(), y, epoch=1)
        ref_opt.zero_grad(set_to_none=True)
        ref_loss.backward()
        ref_opt.step()
        assert torch.equal(loss, ref_loss.detach()) and torch.equal(logits, ref_logits.detach())
    for a, b in zip(student.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_compiled_student_shares_the_module_weights_and_keys():
    model = models.create("resnet8", num_classes=5)
    compiled = fast.Speed(CPU, compile=True).compiled(model)
    assert compiled is not model and isinstance(compiled, torch.nn.Module)
    assert list(compiled.parameters())[0] is list(model.parameters())[0]
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())  # checkpoints unchanged
    assert fast.Speed(CPU).compiled(model) is model


def test_bf16_and_channels_last_step_on_cpu():
    torch.manual_seed(0)
    speed = fast.Speed(CPU, amp=True, channels_last=True)
    student = speed.prepare(models.create("resnet8", num_classes=5))
    teacher = speed.prepare(models.create("resnet8", num_classes=5)).eval()
    assert student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    step = Step(student, LiveTeacher(teacher, speed, 4), methods.create("kd"), opt, speed, 4)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, comps, logits = step(x, y, None, epoch=1)
    assert logits.dtype == torch.float32 and torch.isfinite(loss)  # loss in fp32
    assert next(student.parameters()).dtype == torch.float32  # weights stay fp32
    t = LiveTeacher(teacher, speed, 4)(speed.inputs(x), None)
    assert t.dtype == torch.float32 and not t.is_inference()  # usable by autograd


def test_resumed_job_records_the_switches_of_each_stretch():
    state = {"epoch": 0}
    note_switches(state, {"device": "cuda", "amp": "bf16"})
    state["epoch"] = 3
    note_switches(state, {"device": "cuda", "amp": "bf16"})  # same switches: one stretch
    assert recorded_switches(state) == {"device": "cuda", "amp": "bf16"}
    note_switches(state, {"device": "cpu", "amp": "off"})
    assert recorded_switches(state) == {
        "device": "cpu", "amp": "off",
        "earlier": [{"from_epoch": 1, "device": "cuda", "amp": "bf16"}]}
    assert recorded_switches({"epoch": 5}) is None  # a checkpoint from before switches


DATASET = {"name": "synthetic", "num_classes": 4, "train_size": 32, "test_size": 32}


def kd_job(teacher, **recipe):
    return {"kind": "student", "dataset": DATASET, "student": "resnet8", "seed": 0,
            "teacher": {"name": "t", "arch": "resnet8", "checkpoint": str(teacher)},
            "method": {"name": "kd", "params": {"T": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}},
            "recipe": {"epochs": 3, "batch_size": 16, "lr": 0.05, "lr_milestones": [2],
                       "eval_batch_size": 32, "loader": "device", **recipe}}


def test_fast_job_trains_like_the_reference_and_its_result_records_how(tmp_path):
    """Quick version of benchmarks/fast_accuracy.py (which compares accuracy over seeds):
    the CPU fast path (bf16 autocast, channels_last, fp16 logit cache) follows the reference
    path's (fp32, NCHW, live teacher) losses within bf16 rounding, epoch by epoch."""
    torch.manual_seed(1)
    teacher = tmp_path / "t.pt"
    checkpoints.atomic_save({"model": models.create("resnet8", num_classes=4).state_dict()},
                            teacher)
    losses: dict[str, list[float]] = {"ref": [], "fast": []}
    results = {}
    for name, recipe in (("ref", {"amp": "off", "channels_last": "off", "teacher_cache": "off"}),
                         ("fast", {"amp": "bf16", "channels_last": "on", "teacher_cache": "on"})):
        hooks = Hooks(epoch_done=lambda row, p, k=name: losses[k].append(row["train_loss"]))
        results[name] = train(Run(kd_job(teacher, **recipe), tmp_path / name, tmp_path), hooks)
    assert losses["fast"] == pytest.approx(losses["ref"], rel=0.03)
    assert results["ref"]["switches"] == {
        "device": "cpu", "amp": "off", "channels_last": False, "compile": False,
        "loader": "device", "teacher": "live", "teacher_note": "teacher_cache: off"}
    sw = results["fast"]["switches"]
    assert (sw["amp"], sw["channels_last"], sw["teacher"]) == ("bf16", True, "cache")
    assert sw["teacher_note"].endswith("-crop4flip-fp16.npy (host)")

    db = Database(f"sqlite:///{tmp_path / 'k.db'}", create=True)  # the row keeps them
    migrate.upgrade(db)
    with db.write() as s:
        s.add(Job(id=1, hash="h", grid="g", kind="student", dataset="synthetic", teacher="t",
                  student="resnet8", method="kd", seed=0, config={}, created_at=0.0))
        s.flush()
        s.add(Result(job_id=1, **results["fast"]))
    with db.read() as s:
        assert s.execute(select(Result.switches)).scalar_one() == sw
    db.dispose()


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor's CPU backend compiles C++ and no compiler is installed")
def test_compiled_job_trains_like_the_eager_one_on_cpu(tmp_path):
    """torch.compile for real (inductor's CPU backend; CUDA adds CUDA graphs on top): full
    batches run the compiled forward and backward, the smaller last batch the eager module,
    and the job follows the eager job's losses and writes the same checkpoint keys."""
    torch.manual_seed(1)
    teacher = tmp_path / "t.pt"
    checkpoints.atomic_save({"model": models.create("resnet8", num_classes=4).state_dict()},
                            teacher)
    dataset = {**DATASET, "train_size": 40}  # batches of 16, 16 and 8
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    results = {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for name, compile_ in (("eager", "off"), ("compiled", "on")):
        job = {**kd_job(teacher, compile=compile_, teacher_cache="off"), "dataset": dataset}
        job["recipe"] = {**job["recipe"], "epochs": 2, "lr_milestones": [1]}
        hooks = Hooks(epoch_done=lambda row, p, k=name: losses[k].append(row["train_loss"]))
        results[name] = train(Run(job, tmp_path / name, tmp_path), hooks)
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)
    assert results["compiled"]["switches"]["compile"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # student and teacher
    eager = torch.load(tmp_path / "eager" / "model.pt", weights_only=True)["model"]
    compiled = torch.load(tmp_path / "compiled" / "model.pt", weights_only=True)["model"]
    assert list(compiled) == list(eager)  # no _orig_mod. prefixes: loads into the plain model
    for k in eager:
        assert torch.allclose(compiled[k].float(), eager[k].float(), rtol=1e-2, atol=1e-3), k
