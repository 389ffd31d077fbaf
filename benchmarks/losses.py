"""Forward+backward cost of each distillation loss, relative to plain KD.

    python benchmarks/losses.py [--sizes 64x100,256x1000] [--devices cpu,cuda] [--no-reference]

Every measurement runs in a fresh subprocess so that no allocator cache or earlier method
skews the memory figure:
- time: best (minimum) wall time and process CPU time (all threads) over repeated
  forward+backward steps of the loss on random logits (inputs already on the device; CUDA
  synchronized). The minimum is the least disturbed by other processes; on a shared CPU the
  CPU time is the steadier of the two, so CPU ratios use it. The load average is printed
  before and after: on a busy machine, CPU timings are not to be trusted;
- peak: extra memory of one forward+backward over what was allocated before it (logits,
  labels, the module). On CUDA, `torch.cuda.max_memory_allocated` (tensor bytes). On CPU,
  growth of the process's peak resident set (Linux VmHWM, reset through
  /proc/self/clear_refs just before the step), i.e. every page the step touched, including
  malloc overhead: an honest upper bound on what the step needs, in 4 kB pages.
Rows marked "(naive)" swap in the tests' broadcast reference implementations of the
ranking primitives (`tests/test_ranking.py`), to compare the chunked ones with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["kd", "dkd", "dist", "cakd", "cmkd", "rkkd", "kd+ls", "kd+rkkd", "kd+cmkd"]
NAIVE = ["rkkd (naive)", "cmkd (naive)"]
HEADER = ("method", "wall ms", "cpu ms", "x kd", "peak MB", "x kd")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _use_naive(method: str) -> None:
    """Replace the chunked ranking primitives by the tests' broadcast references."""
    sys.path.append(str(ROOT / "tests"))
    import test_ranking

    from kdrun.methods import cmkd, rkkd

    if method == "rkkd":
        rkkd.kendall_tau = test_ranking.naive_kendall
    else:
        cmkd.RANK_OPS["pairwise_sigmoid"] = test_ranking.naive_soft_rank


def child(method: str, B: int, C: int, device: str) -> dict:
    import torch

    from kdrun.methods import create

    name = method.split()[0]
    if method.endswith("(naive)"):
        _use_naive(name)
    torch.manual_seed(0)
    loss_fn = create(name).to(device)

    def make(b: int, c: int):
        zs = torch.randn(b, c, device=device, requires_grad=True)
        return zs, torch.randn(b, c, device=device), torch.randint(0, c, (b,), device=device)

    def step(zs, zt, y) -> None:
        zs.grad = None
        loss_fn(zs, zt, y, 100)[0].backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step(*make(4, 10))  # start autograd/OpenMP threads without touching much memory
    inputs = make(B, C)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(*inputs)
        peak_mb = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _status_kb("VmRSS")
            step(*inputs)
            peak_mb = (_status_kb("VmHWM") - before) / 1024
        except OSError:
            step(*inputs)
            peak_mb = float("nan")
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < 3 or (time.perf_counter() - start < 2.0 and len(wall) < 50):
        t0, c0 = time.perf_counter(), time.process_time()
        step(*inputs)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ms, cpu_ms = 1000 * min(wall), 1000 * min(cpu)
    return {"ms": ms, "cpu_ms": cpu_ms, "peak_mb": peak_mb, "reps": len(wall)}


def measure(method: str, B: int, C: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(B), str(C), device]
    cmd += ["--threads", os.environ.get("OMP_NUM_THREADS", "0")]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64x100,256x1000", help="BxC list")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--no-reference", action="store_true", help="skip the (naive) rows")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: steadiest on a shared machine; 0 = torch default)",
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the children
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        method, B, C, device = args.child
        print(json.dumps(child(method, int(B), int(C), device)))
        return

    import torch

    devices = [d for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    methods = METHODS + ([] if args.no_reference else NAIVE)
    threads = args.threads or torch.get_num_threads()
    print(f"kdrun loss benchmark: torch {torch.__version__}, {threads} CPU thread(s)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("wall/cpu = best ms of one forward+backward (cpu: process CPU time, all threads);")
    print("peak = extra memory of one forward+backward, MB (CPU: growth of the peak RSS, VmHWM,")
    print("in a fresh process, page-granular: sub-MB values are noise; CUDA: max_memory_allocated)")
    print("x kd = ratio to kd (time: by CPU time on CPU, by wall time on CUDA)")
    for device in devices:
        label = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        for size in args.sizes.split(","):
            B, C = map(int, size.split("x"))
            print(f"\n{device} ({label})  B={B} C={C}")
            print("{:<14}{:>10}{:>10}{:>8}{:>10}{:>8}".format(*HEADER))
            base = None
            for method in methods:
                r = measure(method, B, C, device)
                if "error" in r:
                    print(f"{method:<14}  error: {r['error']}")
                    continue
                base = base or r
                key = "ms" if device == "cuda" else "cpu_ms"
                mem = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] >= 1 else float("nan")
                print(
                    f"{method:<14}{r['ms']:>10.2f}{r['cpu_ms']:>10.2f}{r[key] / base[key]:>8.1f}"
                    f"{r['peak_mb']:>10.1f}{mem:>8.1f}"
                )
                sys.stdout.flush()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__":
    main()
