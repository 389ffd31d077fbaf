"""The training process: trains one job and tells its supervisor what happens.

Started by the supervisor as `python -m kdrun.worker.child`, a fresh interpreter whose
CUDA_VISIBLE_DEVICES is already set, so GPU pinning is real. It never touches the database:
every write about the job goes through the supervisor, which holds the lease.

Protocol, JSON lines. In on stdin: the job (first line), then `ack` (an epoch's metrics are
stored) and `stop` (finish this epoch, checkpoint, stop). Out on the original stdout:
`started`, `progress`, `epoch` (then wait for `ack`), and one final `succeeded`, `failed` or
`interrupted`. Everything else printed goes to stderr, the job's log file. When stdin closes,
the supervisor is gone, and this process exits at once without writing anything more.

A multi-GPU job runs this once per rank (RANK, WORLD_SIZE, ... in the environment; see
kdrun.worker.ranks). Rank 0 speaks as above; the other ranks train with no-op hooks (they
still obey `stop`) and send only their final message, tagged with their rank.
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

from kdrun import __version__, headline
from kdrun.data import num_classes
from kdrun.errors import UserError
from kdrun.loader_workers import default_workers
from kdrun.trackers import hook as tracker_hook
from kdrun.trackers.hook import TrackerSet
from kdrun.train.trainer import Hooks, Interrupted, NonFiniteLoss, Run, train
from kdrun.worker import ranks
from kdrun.worker.stopping import ignore_stop_signals

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
    """The cause on the first line (kdrun.headline), then the traceback."""
    return f"{headline.line(e)}\n{traceback.format_exc()}"


def hooks(chan: Channel, control: Control, trackers: TrackerSet | None = None) -> Hooks:
    last = [0.0]
    saved: list[dict[str, Any]] = []  # the epoch's checkpoint record, sent with the epoch

    def step(epoch: int, done: int, total: int) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or done == total:
            chan.send({"type": "progress", "epoch": epoch, "done": done, "total": total})
            last[0] = time.monotonic()

    def epoch_done(row: dict[str, Any], progress: dict[str, Any]) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} epoch {row['epoch']}/{progress['epochs']}: "
              f"loss {row['train_loss']:.4f}, "
              f"test top-1 {row['test_top1']:.2f}", file=sys.stderr, flush=True)
        chan.send({"type": "epoch", "row": row, "progress": progress,
                   "checkpoint": saved.pop() if saved else None})
        control.acks.acquire()  # stored with its checkpoint (or we get killed): go on
        if trackers:  # the one place a job logs to TensorBoard / W&B (rank 0 only)
            trackers.epoch(row)

    def notice(text: str, bad: list[str]) -> None:
        chan.send({"type": "notice", "text": text, "bad": bad})

    return Hooks(epoch_done=epoch_done, step=step, stop_requested=control.stop.is_set,
                 checkpoint_saved=saved.append, notice=notice)


def quiet_hooks(control: Control) -> Hooks:
    """A rank other than 0: rank 0 reports for the job; this one only hears `stop`."""
    return Hooks(stop_requested=control.stop.is_set)


def loader_workers(given: int | None, config: dict[str, Any], threads: int | None) -> int:
    """--loader-workers, or by default as many as this job's share of the CPUs allows."""
    return given if given is not None else default_workers(config["dataset"]["name"], threads)


def make_run(job: dict[str, Any], device: torch.device) -> Run:
    runs_dir = Path(job["runs_dir"])
    teacher = job["teacher_checkpoint"]
    return Run(job["config"], runs_dir / job["run_dir"], Path(job["data_dir"]), device,
               runs_dir / teacher if teacher else None,
               loader_workers(job["loader_workers"], job["config"], job.get("threads")),
               download=job["download"], attempt=job.get("attempt"),
               resume=job.get("checkpoints"), teacher_sha256=job.get("teacher_sha256"))


def run_job(job: dict[str, Any], chan: Channel, control: Control) -> dict[str, Any]:
    """Train the job; the final message for the supervisor. A rank other than 0 trains
    alongside rank 0, which reports for the job: it says only how it ended."""
    lead = int(os.environ.get("RANK", "0")) == 0
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    if device.type == "cuda" and job.get("world_size", 1) > 1:  # torchrun-style: cuda:LOCAL_RANK
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    if device.type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return {"type": "failed", "retry": True,
                "error": f"CUDA is not available in the training process "
                         f"(CUDA_VISIBLE_DEVICES={visible!r})"}
    trackers = None
    if lead:
        chan.send({"type": "started", "provenance": provenance(device)})
        trackers = tracker_hook.for_job(job, chan.send)
    result, ok = None, False  # ok: finished or stopped on request (the tracker run is not failed)
    try:
        result = train(make_run(job, device),
                       hooks(chan, control, trackers) if lead else quiet_hooks(control))
        ok = True
    except Interrupted as e:
        ok = True
        return {"type": "interrupted", "reason": str(e)}
    except (UserError, NonFiniteLoss) as e:  # deterministic: retrying cannot help
        return {"type": "failed", "retry": False, "error": _describe(e)}
    except Exception as e:
        return {"type": "failed", "retry": True, "error": _describe(e)}
    finally:
        if trackers is not None:
            trackers.finish(result, ok)
    if not lead:
        return {"type": "succeeded"}
    result["checkpoint"] = _relative(result["checkpoint"], Path(job["runs_dir"]))
    is_teacher = job["config"]["kind"] == "teacher"
    return {"type": "succeeded", "result": result,
            "teacher": teacher_entry(job["job_id"], job["config"], result) if is_teacher else None}


def log_to(path: Path) -> None:
    """Send this process's output (stray prints included) to the end of `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def warm_up() -> None:
    """Import now what training needs later: a process the worker starts ahead of its next job
    (kdrun.worker.supervisor.TrainingProcess.warm) does this while the current job trains.
    torch.optim pulls in torch._dynamo when the first optimizer is made (~1.5 s)."""
    import torch._dynamo  # noqa: F401

    from kdrun.models.registry import load_zoos
    load_zoos()


def main() -> None:
    ignore_stop_signals()  # only the supervisor acts on them (kdrun.worker.stopping)
    chan = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)  # stray prints go to the log, not into the protocol
    # Commands are read from a duplicate of stdin, never through sys.stdin: the reader thread
    # blocks holding its stream's lock, and a forked DataLoader worker's start-up closes
    # sys.stdin (multiprocessing does), which would wait for that lock for ever.
    commands = os.fdopen(os.dup(0), "r")
    warm_up()
    line = commands.readline()
    if not line:  # a prestarted process the worker no longer needs
        os._exit(0)
    job = json.loads(line)
    ranks.from_slurm(os.environ)
    rank = int(os.environ.get("RANK", "0"))
    if os.environ.get(ranks.FROM_SLURM):  # srun gathers every rank's output: keep our own log
        log_to(Path(job["runs_dir"]) / job["run_dir"] / ranks.log_name(rank))
    elif job.get("log"):  # the job's log (a prestarted process did not know it when it began)
        log_to(Path(job["log"]))
    control = Control(commands)
    final = run_job(job, chan, control)
    chan.send({**final, "rank": rank} if rank else final)


if __name__ == "__main__":
    main()
