"""The training process: trains one job and tells its supervisor what happens.

Started by the supervisor as `python -m kdrun.worker.child`, a fresh interpreter whose
CUDA_VISIBLE_DEVICES is already set, so GPU pinning is real. It never touches the database:
every write about the job goes through the supervisor, which holds the lease.

Protocol, JSON lines. In on stdin: the job (first line), then `ack` (an epoch's metrics are
stored) and `stop` (finish this epoch, checkpoint, stop). Out on the original stdout:
`started`, `progress`, `epoch` (then wait for `ack`), and one final `succeeded`, `failed` or
`interrupted`. Everything else printed goes to stderr, the job's log file. When stdin closes,
the supervisor is gone, and this process exits at once without writing anything more.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import torch

from kdrun import __version__
from kdrun.data import num_classes
from kdrun.errors import UserError
from kdrun.train.trainer import Hooks, Interrupted, NonFiniteLoss, Run, train

ORPHANED = 3  # exit status when the supervisor disappeared
PROGRESS_EVERY_S = 1.0


class Control:
    """Commands from the supervisor, read by a background thread."""

    def __init__(self, stream: TextIO) -> None:
        self.stop = threading.Event()
        self.acks = threading.Semaphore(0)
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            if line.strip() == "stop":
                self.stop.set()
            elif line.strip() == "ack":
                self.acks.release()
        os._exit(ORPHANED)  # no supervisor, no lease: stop before touching the checkpoint


class Channel:
    """JSON lines to the supervisor (thread-safe)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.lock = stream, threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            self.stream.write(json.dumps(msg) + "\n")
            self.stream.flush()


def provenance(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"kdrun_version": __version__, "torch_version": torch.__version__,
            "device_name": name}


def teacher_entry(job_id: int, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The registry row for a teacher kdrun trained itself."""
    c = config
    return {"name": f"{c['student']}-{c['dataset']['name']}-s{c['seed']}-{job_id}",
            "arch": c["student"], "dataset": c["dataset"]["name"],
            "num_classes": num_classes(c["dataset"]), "path": result["checkpoint"],
            "sha256": result["sha256"], "top1": result["best_top1"],
            "top5": result["best_top5"], "source": "trained"}


def _relative(path: str, base: Path) -> str:
    """Paths under the runs directory are stored relative to it, so machines that mount it
    elsewhere still find them."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def hooks(chan: Channel, control: Control) -> Hooks:
    last = [0.0]

    def step(epoch: int, done: int, total: int) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or done == total:
            chan.send({"type": "progress", "epoch": epoch, "done": done, "total": total})
            last[0] = time.monotonic()

    def epoch_done(row: dict[str, Any], progress: dict[str, Any]) -> None:
        print(f"epoch {row['epoch']}/{progress['epochs']}: loss {row['train_loss']:.4f}, "
              f"test top-1 {row['test_top1']:.2f}", file=sys.stderr, flush=True)
        chan.send({"type": "epoch", "row": row, "progress": progress})
        control.acks.acquire()  # stored (or we get killed): only then checkpoint the epoch

    return Hooks(epoch_done=epoch_done, step=step, stop_requested=control.stop.is_set)


def run_job(job: dict[str, Any], chan: Channel, control: Control) -> dict[str, Any]:
    """Train the job; the final message for the supervisor."""
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return {"type": "failed", "retry": True,
                "error": f"CUDA is not available in the training process "
                         f"(CUDA_VISIBLE_DEVICES={visible!r})"}
    chan.send({"type": "started", "provenance": provenance(device)})
    runs_dir = Path(job["runs_dir"])
    teacher = job["teacher_checkpoint"]
    run = Run(job["config"], runs_dir / job["run_dir"], Path(job["data_dir"]), device,
              runs_dir / teacher if teacher else None, job["loader_workers"],
              download=job["download"])
    try:
        result = train(run, hooks(chan, control))
    except Interrupted as e:
        return {"type": "interrupted", "reason": str(e)}
    except (UserError, NonFiniteLoss) as e:  # deterministic: retrying cannot help
        return {"type": "failed", "retry": False, "error": _describe(e)}
    except Exception as e:
        return {"type": "failed", "retry": True, "error": _describe(e)}
    result["checkpoint"] = _relative(result["checkpoint"], runs_dir)
    is_teacher = job["config"]["kind"] == "teacher"
    return {"type": "succeeded", "result": result,
            "teacher": teacher_entry(job["job_id"], job["config"], result) if is_teacher else None}


def main() -> None:
    chan = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)  # stray prints go to the log, not into the protocol
    job = json.loads(sys.stdin.readline())
    control = Control(sys.stdin)
    chan.send(run_job(job, chan, control))


if __name__ == "__main__":
    main()
