"""The CUDA code path on a machine without a GPU, as far as it can run: tensor placement and
host syncs of a training step, under fake CUDA tensors.

torch's FakeTensorMode gives tensors a device and a shape but no data, so every operation of
the step runs its device checks (a CPU tensor meeting a CUDA one fails as on a real GPU), and
reading a value (`.item()`, `bool(t)`, data-dependent Python control flow) fails too: the step
must have none. (A `.cpu()` copy, the other way to sync, passes unnoticed.) Only the models
and the cache table are made on "cuda", as a job moves them there; everything else is created
where the code under test puts it. The backward pass needs a real CUDA context and is skipped.
Speed switches stay off (bf16 autocast, compile and CUDA graphs need the device itself).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from kdrun import methods, models
from kdrun.data.device_loader import DeviceLoader
from kdrun.train import fast, teacher_cache
from kdrun.train.evaluate import predict
from kdrun.train.step import LiveTeacher, Step

CUDA = torch.device("cuda")
CLASSES, BATCH = 10, 4
STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: None)
    with FakeTensorMode(allow_non_fake_inputs=True):
        yield


def on_cuda(name: str) -> torch.nn.Module:
    with CUDA:  # fake modules cannot be moved with .to(): make them there
        return models.create(name, num_classes=CLASSES)


def loader(train: bool = True) -> DeviceLoader:
    data = np.zeros((3 * BATCH, 32, 32, 3), np.uint8)
    gen = torch.Generator().manual_seed(0) if train else None
    return DeviceLoader(data, np.arange(3 * BATCH) % CLASSES, BATCH, *STATS, device=CUDA,
                        train=train, generator=gen)


def train_batches(step: Step, source: DeviceLoader) -> None:
    """The trainer's inner loop: metrics accumulate on the device, nothing is read back."""
    loss_sum, correct = torch.zeros((), device=CUDA), torch.zeros((), device=CUDA)
    comp_sum: dict[str, torch.Tensor] = {}
    for x, y, views in step.batches(source):
        loss, comps, logits = step(x, y.to(CUDA, non_blocking=True), views, epoch=1)
        assert loss.device.type == logits.device.type == "cuda"
        assert all(v.device.type == "cuda" for v in comps.values()), comps
        loss_sum += loss * y.shape[0]
        for k, v in comps.items():
            comp_sum[k] = comp_sum.get(k, 0) + v.detach() * y.shape[0]
        correct += (logits.argmax(1) == y).sum()


@pytest.mark.parametrize("name", ["vanilla", "kd", "dkd", "dist", "kd+ls", "cmkd", "cakd",
                                  "rkkd", "kd+rkkd", "dkd+ls+rkkd", "kd+cmkd"])
def test_step_stays_on_the_gpu_and_never_syncs(fake_cuda, name):
    student, teacher = on_cuda("resnet8"), on_cuda("resnet8").eval()
    assert next(student.parameters()).device.type == "cuda"
    speed = fast.Speed(CUDA)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    source = LiveTeacher(teacher, speed, BATCH) if methods.needs_teacher(name) else None
    step = Step(student, source or teacher_cache.NoTeacher(), methods.create(name), opt, speed,
                BATCH)
    train_batches(step, loader())


def test_cached_teacher_lookup_on_the_gpu(fake_cuda):
    student = on_cuda("resnet8")
    table = torch.zeros(3 * BATCH * teacher_cache.views_per_image(4), CLASSES,
                        dtype=torch.float16, device=CUDA)  # a GPU-resident fp16 cache
    speed = fast.Speed(CUDA)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    step = Step(student, teacher_cache.CachedTeacher(table, 4), methods.create("kd"), opt,
                speed, BATCH)
    train_batches(step, loader())


def test_evaluation_returns_host_tensors(fake_cuda):
    """Labels of a device loader live on the GPU; predict hands both back on the CPU, where
    topk and the agreement metrics compare them with the teacher's."""
    logits, labels = predict(on_cuda("resnet8"), loader(False), CUDA)
    assert logits.device.type == labels.device.type == "cpu"
    assert logits.shape == (3 * BATCH, CLASSES) and labels.shape == (3 * BATCH,)
