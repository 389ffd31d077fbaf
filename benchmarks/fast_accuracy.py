"""Does the fast path change accuracy? KD students trained with and without the speed switches.

    python benchmarks/fast_accuracy.py [--seeds 0,1,2] [--epochs 15] [--train-size 2000]
        [--teacher resnet20] [--student resnet8] [--device auto|cpu|cuda] [--compile off]

On the synthetic dataset, a teacher is trained once (plain fp32), then for every seed two KD
students run through the real trainer with the same data stream (loader: device for both, so
the same order, crops and flips from a seed):
- reference: amp off, channels_last off, compile off, teacher_cache off (live fp32 teacher);
- fast: the switches on. On CUDA that is the CUDA defaults (bf16, channels_last, compile,
  fp16 logit cache). On CPU it is what runs on a CPU: bf16 autocast, channels_last and the
  logit cache (fp16, as with bf16), with compile off unless --compile on (it costs minutes
  of compilation per job on a CPU and changes no arithmetic that matters here).
Reported: each seed's best and last test top-1, their means and standard deviations, and
whether the means differ by at most one pooled standard deviation (the root mean square of
the two paths' sample standard deviations). Runs left in --out are resumed, not retrained,
so a second call with more seeds only trains the new ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from train_throughput import device_name  # noqa: E402  (this folder, first on sys.path)

from kdrun.train.trainer import Run, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--teacher", default="resnet20")
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default=None, choices=["auto", "on", "off"],
                    help="fast path's compile (default: auto, i.e. on on CUDA, off on CPU)")
    ap.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = {"name": "synthetic", "num_classes": args.classes, "train_size": args.train_size,
               "test_size": args.test_size}
    m = max(1, args.epochs)

    def recipe(epochs: int, **switches) -> dict:
        # The 240-epoch schedule's milestones (150/180/210) scaled to `epochs`.
        steps = sorted({max(1, round(epochs * f)) for f in (150 / 240, 180 / 240, 210 / 240)})
        return {"epochs": epochs, "lr_milestones": steps, "loader": "device", **switches}

    ref = {"amp": "off", "channels_last": "off", "compile": "off", "teacher_cache": "off"}
    if dev.type == "cuda":
        fast = {"amp": "auto", "channels_last": "auto", "compile": args.compile or "auto",
                "teacher_cache": "on"}
    else:
        fast = {"amp": "bf16", "channels_last": "on", "compile": args.compile or "off",
                "teacher_cache": "on"}
    out = Path(args.out or tempfile.mkdtemp(prefix="kdrun-fast-accuracy-"))
    print(f"device: {device_name(dev)}; {args.teacher} -> {args.student} KD, synthetic "
          f"{args.classes} classes, {args.train_size} train / {args.test_size} test images, "
          f"{m} epochs, seeds {seeds}; runs in {out}", flush=True)

    t0 = time.perf_counter()
    teacher_cfg = {"kind": "teacher", "dataset": dataset, "student": args.teacher, "seed": 0,
                   "teacher": None, "method": {"name": "vanilla", "params": {}},
                   "recipe": recipe(args.teacher_epochs, **ref)}
    t = train(Run(teacher_cfg, out / "teacher", out, dev))
    print(f"teacher {args.teacher}: test top-1 {t['best_top1']:.2f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    results: dict[str, list[dict]] = {"reference": [], "fast": []}
    for seed in seeds:
        for path, switches in (("reference", ref), ("fast", fast)):
            cfg = {"kind": "student", "dataset": dataset, "student": args.student, "seed": seed,
                   "teacher": {"name": "t", "arch": args.teacher,
                               "checkpoint": str(out / "teacher" / "model.pt")},
                   "method": {"name": "kd", "params": {"T": 4.0, "ce_weight": 0.1,
                                                       "kd_weight": 0.9}},
                   "recipe": recipe(m, **switches)}
            t0 = time.perf_counter()
            r = train(Run(cfg, out / f"{path}-s{seed}", out, dev))
            results[path].append(r)
            print(f"seed {seed} {path:<9}: best {r['best_top1']:.2f}, last {r['last_top1']:.2f} "
                  f"({time.perf_counter() - t0:.0f} s; {r['switches']})", flush=True)

    print()
    for key in ("best_top1", "last_top1"):
        a = [r[key] for r in results["reference"]]
        b = [r[key] for r in results["fast"]]
        sa = statistics.stdev(a) if len(a) > 1 else 0.0
        sb = statistics.stdev(b) if len(b) > 1 else 0.0
        pooled = ((sa**2 + sb**2) / 2) ** 0.5
        diff = statistics.mean(b) - statistics.mean(a)
        verdict = "within" if abs(diff) <= pooled else "NOT within"
        print(f"{key}: reference {statistics.mean(a):.2f} +- {sa:.2f}, fast "
              f"{statistics.mean(b):.2f} +- {sb:.2f} (std over {len(a)} seeds); difference "
              f"{diff:+.2f} -> {verdict} one pooled std ({pooled:.2f})")


if __name__ == "__main__":
    main()
