"""Training throughput of KD pairs: a reference loop, kdrun's step, kdrun's step with the cache.

    python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps N] [--warmup N]
        [--pairs resnet32x4:resnet8x4,resnet56:resnet20,resnet32x4:ShuffleV2]
        [--cache auto|full|sampled] [--amp auto|bf16|off] [--channels-last auto|on|off]
        [--compile auto|on|off] [--pack 1,2,4,8] [--json PATH]

For each teacher:student pair, KD (T=4, 0.1 CE + 0.9 KL) at batch 64 with SGD, timed over
--steps steps after --warmup steps (which absorb DataLoader start-up, torch.compile and CUDA
graph capture; on CPU img/s is that of the fastest step, on CUDA of the whole span) on a
synthetic CIFAR-100-shaped training set (100 classes, 32x32 uint8; the speed does not depend
on the pixels). Weights are random: speed does not depend on them either.

- reference: the loop as the common CIFAR KD codebases (RepDistiller, mdistiller) write it:
  torchvision DataLoader with 2 workers over PIL images (RandomCrop + flip + ToTensor +
  Normalize), fp32, the teacher's forward under no_grad every step, `loss.item()` and accuracy
  bookkeeping every step.
- kdrun: `kdrun.train.step.Step` with the live teacher, batches from the device-resident
  `DeviceLoader`, the speed switches resolved for the device as the trainer resolves them
  (CUDA: bf16, channels_last, compile; CPU: all off unless asked), metrics kept on the device.
- kdrun + cache: the same step with `CachedTeacher` lookups instead of teacher forwards.
  --cache full builds the real cache file with `teacher_cache.build` for the whole training
  set and times the build (the default on CUDA, with 50k images as CIFAR-100). --cache sampled
  (the default on CPU, where 162 forwards per image take hours) fills a table of the same
  shape with the real teacher logits of exactly the views the timed steps draw (the rest NaN,
  so a wrong lookup would show as a NaN loss); the build time is then projected from the
  teacher's measured throughput on the build's batches.

Projected 240-epoch wall time: 240 x (50,000 training images / img/s + 10,000 test images /
eval img/s), plus the warm-up time (compilation) once. The cache's build is paid once per
teacher and dataset for the whole grid: 162 forwards per image against a run's 240.
--pack K,...: K processes run the kdrun + cache step at once on the device (what `--slots K`
does with small jobs; on a CPU each gets cores/K threads, as there); reported is their summed
img/s. GPU numbers only come from a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository first, so that a checkout's kdrun is measured even without an install.
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from kdrun import checkpoints, methods, models  # noqa: E402
from kdrun.data.device_loader import DeviceLoader  # noqa: E402
from kdrun.data.images import CIFAR100_MEAN, CIFAR100_STD, ArrayImages  # noqa: E402
from kdrun.data.synthetic import SyntheticParams  # noqa: E402
from kdrun.data.synthetic import build as synthetic  # noqa: E402
from kdrun.recipe import Recipe  # noqa: E402
from kdrun.train import fast, teacher_cache  # noqa: E402
from kdrun.train.evaluate import predict  # noqa: E402
from kdrun.train.step import LiveTeacher, Step, TeacherLogits  # noqa: E402

PAIRS = "resnet32x4:resnet8x4,resnet56:resnet20,resnet32x4:ShuffleV2"
CIFAR_TRAIN, CIFAR_TEST, EPOCHS, CLASSES, BATCH = 50_000, 10_000, 240, 100, 64
TARGET_RATIO, TARGET_WALL_S = 10.0, 240.0


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Clock:
    """Wall time of the steps after the warm-up. On CPU every step is timed (CPU work is
    synchronous) and img/s comes from the fastest step: other processes on a shared machine
    only ever slow a step down, so the minimum is the best estimate of the step's own cost (as
    `timeit` takes it); for the reference loop it also picks a step whose batch was ready,
    which flatters the reference, never kdrun. On CUDA only the whole span is timed, with one
    sync at each end, since a per-step sync would itself slow the steps down."""

    def __init__(self, dev: torch.device, warmup: int, steps: int, span: bool = False) -> None:
        self.dev, self.warmup, self.steps = dev, warmup, steps
        self.per_step = dev.type == "cpu" and not span  # span: whole-span timing everywhere
        self.start, self.marks = time.perf_counter(), []

    def done(self, i: int) -> bool:
        """Call at the top of iteration i: True once the timed steps are over."""
        if i == self.warmup + self.steps:
            return True
        if i == self.warmup or (i > self.warmup and self.per_step):
            sync(self.dev)
            self.marks.append(time.perf_counter())
        return False

    def stop(self) -> None:
        sync(self.dev)
        self.marks.append(time.perf_counter())

    @property
    def img_s(self) -> float:
        if self.per_step:
            return BATCH / float(np.diff(self.marks).min())
        return self.steps * BATCH / (self.marks[-1] - self.marks[0])

    @property
    def warmup_s(self) -> float:
        return self.marks[0] - self.start


# ---------------------------------------------------------------- reference loop (common code)

class PILCIFAR(Dataset):
    """Like torchvision.datasets.CIFAR100 (which RepDistiller subclasses): PIL per image."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform) -> None:
        self.data, self.targets, self.transform = data, targets.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def distill_kl(y_s, y_t, T: float = 4.0):
    p_s = F.log_softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]


def accuracy(output, target, topk=(1, 5)):
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.shape[0])
            for k in topk]


def reference(student, teacher, ds: ArrayImages, test: ArrayImages, dev, steps: int,
              warmup: int, workers: int) -> dict:
    norm = T.Normalize(CIFAR100_MEAN, CIFAR100_STD)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          norm])
    loader = DataLoader(PILCIFAR(ds.data, ds.targets, train_tf), batch_size=BATCH, shuffle=True,
                        num_workers=workers, pin_memory=dev.type == "cuda")
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    student.train()
    teacher.eval()
    losses, top1 = [], []
    clock = Clock(dev, warmup, steps)
    for i, (x, y) in enumerate(loader):
        if clock.done(i):
            break
        x, y = x.to(dev), y.to(dev)
        logit_s = student(x)
        with torch.no_grad():
            logit_t = teacher(x)
        loss = 0.1 * F.cross_entropy(logit_s, y) + 0.9 * distill_kl(logit_s, logit_t)
        acc1, _ = accuracy(logit_s, y)
        losses.append(loss.item())
        top1.append(acc1[0].item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    clock.stop()
    # Evaluation as RepDistiller's validate(): half the batch, half the workers, .item() each.
    test_loader = DataLoader(PILCIFAR(test.data, test.targets, T.Compose([T.ToTensor(), norm])),
                             batch_size=BATCH // 2, num_workers=max(workers // 2, 0))
    student.eval()
    t1, n = time.perf_counter(), 0
    with torch.no_grad():
        for x, y in test_loader:
            x, y = x.to(dev), y.to(dev)
            out = student(x)
            losses.append(F.cross_entropy(out, y).item())
            top1.append(accuracy(out, y)[0][0].item())
            n += y.shape[0]
    sync(dev)
    return {"img_s": clock.img_s, "eval_img_s": n / (time.perf_counter() - t1),
            "warmup_s": 0.0, "finite": bool(np.isfinite(losses).all())}


# ---------------------------------------------------------------- kdrun paths

@dataclass
class Setup:
    dev: torch.device
    speed: fast.Speed
    train: ArrayImages
    test: ArrayImages
    seed: int = 0


def kdrun_path(setup: Setup, student, teacher_logits: TeacherLogits, steps: int,
               warmup: int, span: bool = False) -> dict:
    """Steps exactly as the trainer takes them, timed after `warmup` steps."""
    dev, speed = setup.dev, setup.speed
    loader = DeviceLoader.from_dataset(setup.train, BATCH, device=dev,
                                       generator=torch.Generator().manual_seed(setup.seed))
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = Step(student, teacher_logits, methods.create("kd", T=4.0), opt, speed, BATCH)
    student.train()
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev)
    clock = Clock(dev, warmup, steps, span)
    for i, (x, y, views) in enumerate(step.batches(loader)):
        if clock.done(i):
            break
        y = y.to(dev, non_blocking=True)
        loss, _, logits = step(x, y, views, epoch=1)
        loss_sum += loss * y.shape[0]
        correct += (logits.argmax(1) == y).sum()
    clock.stop()
    finite = bool(torch.isfinite(loss_sum).item())  # the one host read, as at an epoch's end
    test_loader = DeviceLoader.from_dataset(setup.test, 256, device=dev, train=False)
    if dev.type == "cuda":
        predict(student, test_loader, dev)  # warm up: CUDA context, cuDNN handles, allocator
    t1 = time.perf_counter()
    predict(student, test_loader, dev)
    sync(dev)
    return {"img_s": clock.img_s, "eval_img_s": len(setup.test) / (time.perf_counter() - t1),
            "warmup_s": clock.warmup_s, "finite": finite}


def sampled_cache(setup: Setup, teacher, steps: int, warmup: int) -> teacher_cache.CachedTeacher:
    """A table of the cache's shape holding the real teacher logits of the views the timed
    run will draw (the loader's plan comes from the seed alone), NaN elsewhere."""
    dev, speed, n = setup.dev, setup.speed, len(setup.train)
    peek = DeviceLoader.from_dataset(setup.train, BATCH, device=dev,
                                     generator=torch.Generator().manual_seed(setup.seed))
    plan = peek.plan_epoch()[: (warmup + steps) * BATCH]
    dtype = torch.float16 if teacher_cache.cache_dtype(speed) == "fp16" else torch.float32
    table = torch.full((n * teacher_cache.views_per_image(4), CLASSES), float("nan"),
                       dtype=dtype, device=dev)
    for b in range(0, len(plan), BATCH):
        v = plan[b : b + BATCH].to(dev)
        table[teacher_cache.view_key(v, 4)] = teacher_cache.teacher_logits(
            teacher, peek, v, speed).to(dtype)
    return teacher_cache.CachedTeacher(table, 4)


def build_throughput(setup: Setup, teacher, images: int) -> float:
    """Teacher forwards per second on the cache build's batches (all views of `images`)."""
    loader = DeviceLoader.from_dataset(setup.train, BATCH, device=setup.dev, train=False)
    views = teacher_cache.all_views(torch.arange(images), 4)
    if setup.dev.type == "cuda":
        teacher_cache.teacher_logits(teacher, loader, views, setup.speed)  # warm up
    sync(setup.dev)
    t0 = time.perf_counter()
    teacher_cache.teacher_logits(teacher, loader, views, setup.speed)
    sync(setup.dev)
    return len(views) / (time.perf_counter() - t0)


def full_cache(setup: Setup, teacher, tname: str, cache_dir: Path
               ) -> tuple[teacher_cache.CachedTeacher, float, bool]:
    """The real cache file for this teacher and training set (built unless already there)."""
    ckpt = cache_dir / f"{tname}.pt"
    checkpoints.atomic_save({"model": teacher.state_dict()}, ckpt)
    spec = teacher_cache.CacheSpec(checkpoints.sha256(ckpt), teacher_cache.data_hash(setup.train),
                                   4, teacher_cache.cache_dtype(setup.speed))
    path = cache_dir / spec.filename
    loader = DeviceLoader.from_dataset(setup.train, BATCH, device=setup.dev, train=False)
    t0 = time.perf_counter()
    built = teacher_cache.ensure(path, lambda tmp: teacher_cache.build(
        teacher, loader, tmp, spec.dtype, setup.speed), log=lambda m: None)
    build_s = time.perf_counter() - t0
    src = teacher_cache.CachedTeacher.open(path, setup.dev, len(setup.train), CLASSES, 4)
    return src, build_s, built


def make_models(setup: Setup, tname: str, sname: str, plain: bool = False, seed: int = 0):
    """Teacher and student, in kdrun's memory format (or NCHW fp32 as is, `plain`)."""
    speed = fast.Speed(setup.dev) if plain else setup.speed
    torch.manual_seed(seed)  # the same teacher weights for every pair naming this teacher
    teacher = speed.prepare(models.create(tname, num_classes=CLASSES)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed + 1)
    student = speed.prepare(models.create(sname, num_classes=CLASSES))
    return teacher, student


def projected_s(r: dict) -> float:
    return EPOCHS * (CIFAR_TRAIN / r["img_s"] + CIFAR_TEST / r["eval_img_s"]) + r["warmup_s"]


# ---------------------------------------------------------------- packing (--pack)

def pack_child(args) -> None:
    """One of K packed processes: warm up, say ready, wait for go, time, print img/s."""
    if args.pack_threads:
        torch.set_num_threads(args.pack_threads)
    setup = make_setup(args)
    tname, sname = args.pairs.split(",")[0].split(":")
    teacher, student = make_models(setup, tname, sname)
    src = sampled_cache(setup, teacher, args.steps, args.warmup)
    Path(args.pack_child[0]).touch()
    while not Path(args.pack_child[1]).exists():
        time.sleep(0.005)
    r = kdrun_path(setup, student, src, args.steps, args.warmup, span=True)  # overlapping spans
    print(json.dumps({"img_s": r["img_s"]}))


def packing(args, dev: torch.device) -> list[tuple[int, float]]:
    out = []
    for k in [int(s) for s in args.pack.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            ready = [Path(d) / f"ready{i}" for i in range(k)]
            go = Path(d) / "go"
            cmd = [sys.executable, __file__, *sys.argv[1:]]
            if dev.type == "cpu":  # share the cores out, as `kdrun worker --slots K` does
                cmd += ["--pack-threads", str(max(1, (os.cpu_count() or 1) // k))]
            procs = [subprocess.Popen([*cmd, "--pack-child", str(r), str(go)],
                                      stdout=subprocess.PIPE, text=True) for r in ready]
            while not all(r.exists() for r in ready):
                if any(p.poll() not in (None, 0) for p in procs):
                    raise SystemExit("a packed process failed")
                time.sleep(0.05)
            go.touch()
            rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["img_s"]
                     for p in procs]
        out.append((k, sum(rates)))
        each = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  K={k}: {sum(rates):,.0f} img/s in total ({each})", flush=True)
    return out


# ---------------------------------------------------------------- main

def make_setup(args) -> Setup:
    dev = torch.device(args.device)
    recipe = Recipe(loader="device", amp=args.amp, channels_last=args.channels_last,
                    compile=args.compile)
    n_train = args.train_images or (CIFAR_TRAIN if dev.type == "cuda"
                                    else (args.warmup + args.steps) * BATCH)
    n_test = args.test_images or (CIFAR_TEST if dev.type == "cuda" else 256)
    splits = synthetic(SyntheticParams(num_classes=CLASSES, classes_per_superclass=5,
                                       train_size=n_train, test_size=n_test), Path("."))
    return Setup(dev, fast.resolve(recipe, dev), splits.train, splits.test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda")
    ap.add_argument("--steps", type=int, help="timed steps (default: cuda 300, cpu 6)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: cuda 60, cpu 1)")
    ap.add_argument("--pairs", default=PAIRS, help="teacher:student,...")
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--cache", default="auto", choices=["auto", "full", "sampled"],
                    help="auto: full on cuda, sampled on cpu")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--train-images", type=int, help="synthetic training set size "
                    "(default: cuda 50000, cpu just enough for the steps)")
    ap.add_argument("--test-images", type=int, help="default: cuda 10000, cpu 256")
    ap.add_argument("--pack", help="also measure K packed processes, e.g. 1,2,4,8")
    ap.add_argument("--json", help="write the numbers here too")
    ap.add_argument("--pack-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--pack-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.steps = args.steps or (300 if cuda else 6)
    args.warmup = args.warmup if args.warmup is not None else (60 if cuda else 1)
    cache_mode = args.cache if args.cache != "auto" else ("full" if cuda else "sampled")
    if args.pack_child:
        pack_child(args)
        return

    setup = make_setup(args)
    dev = setup.dev
    print(f"device: {device_name(dev)}; torch {torch.__version__}", flush=True)
    print(f"kdrun switches: {setup.speed.record()}, loader device; batch {BATCH}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; {len(setup.train)} training "
          f"images; reference DataLoader workers: {args.workers}; cache: {cache_mode}; img/s "
          f"{'over the whole timed span' if cuda else 'of the fastest timed step'}", flush=True)
    report: dict = {"device": device_name(dev), "switches": setup.speed.record(),
                    "steps": args.steps, "warmup": args.warmup, "cache": cache_mode, "pairs": {}}
    cache_dir = Path(tempfile.mkdtemp(prefix="kdrun-bench-cache-"))
    try:
        for pair in args.pairs.split(","):
            tname, sname = pair.split(":")
            print(f"\n{tname} -> {sname}", flush=True)
            rows = {}
            teacher, student = make_models(setup, tname, sname, plain=True)
            rows["reference"] = reference(student, teacher, setup.train, setup.test, dev,
                                          args.steps, args.warmup, args.workers)
            teacher, student = make_models(setup, tname, sname)
            rows["kdrun"] = kdrun_path(setup, student, LiveTeacher(teacher, setup.speed, BATCH),
                                       args.steps, args.warmup)
            teacher, student = make_models(setup, tname, sname)
            build_ips = build_throughput(setup, teacher, 16 if cuda else 1)
            build_note = (f"projected from {build_ips:,.0f} teacher img/s on build batches: "
                          f"{CIFAR_TRAIN * 162 / build_ips:,.0f} s for 50k images")
            if cache_mode == "full":
                src, build_s, built = full_cache(setup, teacher, tname, cache_dir)
                build_note = (f"measured {build_s:,.1f} s for {len(setup.train)} images"
                              if built else "reused: built for an earlier pair with this "
                              "teacher") + "; " + build_note
            else:
                src = sampled_cache(setup, teacher, args.steps, args.warmup)
            rows["kdrun + cache"] = kdrun_path(setup, student, src, args.steps, args.warmup)
            ref = rows["reference"]["img_s"]
            print(f"  {'path':<15}{'img/s':>10}{'x ref':>8}{'eval img/s':>12}"
                  f"{'240 epochs (projected)':>26}")
            for name, r in rows.items():
                wall = projected_s(r)
                r.update(ratio=r["img_s"] / ref, projected_240_s=wall)
                print(f"  {name:<15}{r['img_s']:>10,.1f}{r['img_s'] / ref:>7.2f}x"
                      f"{r['eval_img_s']:>12,.0f}{wall / 60:>18,.1f} min"
                      f"{'' if r['finite'] else '  NON-FINITE LOSS'}", flush=True)
            print(f"  cache build, once per teacher and dataset (162 teacher forwards per "
                  f"image = {162 / EPOCHS:.3f} of one {EPOCHS}-epoch run's): {build_note}")
            report["pairs"][pair] = {"rows": rows, "build": build_note}
        first = report["pairs"][args.pairs.split(",")[0]]["rows"]["kdrun + cache"]
        if cuda:
            ok = first["ratio"] >= TARGET_RATIO and first["projected_240_s"] <= TARGET_WALL_S
            print(f"\ntargets (first pair, cache): >= {TARGET_RATIO:.0f}x reference and <= "
                  f"{TARGET_WALL_S / 60:.0f} min per 240 epochs: "
                  f"{first['ratio']:.1f}x, {first['projected_240_s'] / 60:.1f} min -> "
                  f"{'met' if ok else 'NOT met'} on {device_name(dev)}")
        else:
            print("\ntargets (>= 10x reference, <= 4 min per 240 epochs) are for one H100/H200: "
                  "these CPU numbers only give ratios, not GPU throughput")
        if args.pack:
            print(f"\npacking: K processes running {args.pairs.split(',')[0]} (kdrun + cache) "
                  "at once on this device", flush=True)
            report["packing"] = packing(args, dev)
    finally:
        for f in cache_dir.iterdir():
            f.unlink()
        cache_dir.rmdir()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
