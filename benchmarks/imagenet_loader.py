"""Images/s of kdrun's ImageNet input pipeline alone, on real JPEG files, by loader workers.

    python benchmarks/imagenet_loader.py [--images 2000] [--size 500x375] [--workers 0,2,4]
        [--batch 256] [--decode cpu,gpu] [--train-step] [--json PATH]

Writes --images JPEG files (quality 90, smooth content with noise, about the size of an
ImageNet photo: ImageNet's average is ~400x350 and ~110 kB) into a temporary ImageFolder of
100 classes, then runs kdrun's own training loader (`kdrun.data.make_loaders`: ImageFolder,
RandomResizedCrop(224) + flip + normalize, per-sample seeds, persistent workers with
prefetch, pinned memory on CUDA) for each worker count. One pass warms up (worker start-up,
page cache), the next is timed; reported is images/s, images/s per worker process, and the
main process's CPU time per image (with 0 workers: the cost of one image on one core).
--decode gpu (where CUDA exists) times `recipe.gpu_decode: on` instead: workers only read
file bytes, nvJPEG decodes each batch on the GPU and the transform runs there.
--train-step (CUDA) also times ResNet18 training steps (bf16, channels_last, SGD, batch
--batch) on device-resident random images, i.e. what one GPU consumes, and prints how many
loader workers (CPU cores) keep it fed at the measured per-worker rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdrun import data  # noqa: E402
from kdrun.data.gpu_decode import gpu_loaders  # noqa: E402
from kdrun.data.loaders import make_loaders, worker_args  # noqa: E402
from kdrun.loader_workers import available_cpus  # noqa: E402

CLASSES = 100


def write_jpegs(root: Path, n: int, w: int, h: int) -> float:
    """n JPEGs under root/{train,val}/<class>/; returns their mean size in kB."""
    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        c = i % CLASSES
        low = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        px = np.asarray(img, dtype=np.int16) + rng.integers(-30, 31, (h, w, 3))
        path = root / "train" / f"n{c:08d}" / f"{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    for c in range(CLASSES):  # ImageNet's layout wants val too; not timed
        (root / "val" / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        (root / "val" / f"n{c:08d}" / "0.JPEG").write_bytes(
            (root / "train" / f"n{c:08d}" / f"{c}.JPEG").read_bytes())
    return total / n / 1024


def timed_pass(loader, device: torch.device) -> tuple[float, float, int]:
    """(wall s, this process's CPU s, images) of one pass."""
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for x, y in loader:
        if device.type == "cuda":
            x = x.to(device, non_blocking=True)
        n += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0, n


def loader_rate(splits, workers: int, decode: str, batch: int,
                device: torch.device) -> tuple[float, float]:
    """(images/s, CPU ms per image in this process: with 0 workers, the whole pipeline's
    cost per image on one core, which a busy shared machine does not distort)."""
    gen = torch.Generator().manual_seed(0)
    if decode == "gpu":
        train, _, _ = gpu_loaders(splits, device, gen, batch, batch, worker_args(workers, device))
    else:
        train = make_loaders(splits, "torch", device, gen, batch_size=batch,
                             eval_batch_size=batch, num_workers=workers).train
    timed_pass(train, device)  # warm-up: worker start-up, page cache, cuDNN/nvJPEG init
    secs, cpu, n = timed_pass(train, device)
    return n / secs, 1000 * cpu / n


def resnet18_rate(batch: int, device: torch.device, steps: int = 30) -> float:
    from kdrun import models

    model = models.create("ResNet18", num_classes=1000, dataset="imagenet").to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", default="500x375")
    ap.add_argument("--workers", default="0,2,4")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--decode", default=None, help="cpu,gpu (default: gpu too where CUDA is)")
    ap.add_argument("--train-step", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    decodes = (a.decode or ("cpu,gpu" if cuda else "cpu")).split(",")
    if "gpu" in decodes and not cuda:
        sys.exit("--decode gpu needs CUDA")
    w, h = (int(v) for v in a.size.split("x"))
    torch.set_num_threads(1)  # the main process only collates; workers are the subject
    print(f"machine: {available_cpus()} CPUs available (of {os.cpu_count()}), "
          f"{torch.cuda.get_device_name() if cuda else 'no GPU'}; torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdrun-imagenet-") as tmp:
        t0 = time.perf_counter()
        kb = write_jpegs(Path(tmp) / "imagenet", a.images, w, h)
        print(f"wrote {a.images} JPEGs of {w}x{h} ({kb:.0f} kB each on average) in "
              f"{time.perf_counter() - t0:.1f} s; batch {a.batch}, RandomResizedCrop(224)+flip")
        splits = data.load(data.resolve({"name": "imagenet", "num_classes": CLASSES}), Path(tmp))
        print(f"{'decode':>6} {'workers':>7} {'images/s':>9} {'per worker':>10} "
              f"{'main-process CPU ms/image':>26}")
        for decode in decodes:
            for k in (int(v) for v in a.workers.split(",")):
                rate, ms = loader_rate(splits, k, decode, a.batch, device)
                per = rate / max(k, 1)
                rows.append({"decode": decode, "workers": k, "images_per_s": rate,
                             "per_worker": per, "main_cpu_ms_per_image": ms})
                print(f"{decode:>6} {k:>7} {rate:>9.0f} {per:>10.0f} {ms:>26.2f}", flush=True)
    core = next((r["main_cpu_ms_per_image"] for r in rows
                 if r["decode"] == "cpu" and r["workers"] == 0), None)
    if core:
        print(f"one core decodes and augments {1000 / core:.0f} images/s (CPU time, 0 workers)")
    out = {"rows": rows, "cpus": available_cpus(), "images": a.images, "size": a.size}
    if a.train_step and cuda:
        gpu = resnet18_rate(a.batch, device)
        per = 1000 / core if core else None
        out["resnet18_train_images_per_s"] = gpu
        print(f"ResNet18 training step (bf16, channels_last, batch {a.batch}): {gpu:.0f} "
              "images/s on this GPU")
        if per:
            print(f"=> about {math.ceil(gpu / per)} CPU cores at {per:.0f} images/s each keep "
                  "it fed with CPU decoding")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
