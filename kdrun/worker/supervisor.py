"""Supervising one claimed job: its training process, its lease, and every write about it.

The supervisor is the only one that writes about the job, and each write is fenced by the
lease token. It renews the lease on its own schedule, whatever the training loop is doing,
and also judges the lease on its own clock: once no renewal got through for a whole lease,
the database may already have given the job to another worker, so the training process is
killed before it can touch the checkpoint that worker now resumes from.

A multi-GPU (DDP) job is one training process per rank (RankGroup; where they run and what
each is told: kdrun.worker.ranks). Rank 0 speaks for the job; any rank failing, the lease
going, or a stop cut kills every rank at once.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

import kdrun
from kdrun import checkpoints, headline
from kdrun.db import queue
from kdrun.db.engine import Database, default_url, secrets_in
from kdrun.labels import job_label
from kdrun.labels import run_dir_name as run_dir_name
from kdrun.trackers import store as tracker_store
from kdrun.worker import ranks, rundir
from kdrun.worker.stopping import CHILD_BOOT, cut_due

RENEWALS_PER_LEASE = 4
LOG = rundir.LOG  # the training process's output, appended per attempt, in the run directory
GRACE_S = 10.0  # how long a training process may take to exit after its last message
PEER_DEATH_S = 0.5  # how long a rank-0 failure waits to learn whether a peer's death caused it
SRUN_KILL_S = 5.0  # how long srun may take to kill a multi-node job's ranks before it is killed
DB_DOWN = (OperationalError, InterfaceError)  # the database is unreachable (or failing)
PERSIST_RETRY_S = 2.0  # between tries of a write while the database is unreachable

# (slot, description or None when the slot goes idle, steps done, steps in the epoch)
ProgressFn = Callable[[str, str | None, int, int], None]
LogFn = Callable[[str], None]


@dataclass
class Slot:
    """A place to run one job at a time: a device, and the worker name jobs record."""

    name: str  # host:pid:device#k
    device: str  # "cpu" or "cuda:N" (N as this process numbers its visible GPUs)
    threads: int | None = None  # CPU threads for the training process; None: torch's default
    # A multi-GPU (DDP) job's devices, one per rank, `device` first; empty: just `device`.
    group: list[str] = field(default_factory=list)

    @property
    def devices(self) -> list[str]:
        return self.group or [self.device]


@dataclass
class Outcome:
    state: str  # the job's state afterwards (succeeded, failed, queued), or "lost"
    note: str  # one line for the worker's log
    suspect: bool = False  # a failure that may be this machine's fault (see FailureBreaker)


def cuda_visible(index: int) -> str:
    """The CUDA_VISIBLE_DEVICES value that pins a process to the GPU this process calls
    `index` (a scheduler may already have narrowed our own view)."""
    inherited = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    inherited = [d for d in inherited if d]
    return inherited[index] if inherited else str(index)


def child_env(device: str | list[str]) -> dict[str, str]:
    """A training process's environment; `device`: its device, or a multi-GPU job's devices
    (every rank sees all of them, torchrun-style, and uses cuda:LOCAL_RANK)."""
    # The training process never uses the database, so it gets neither its URL nor any
    # password (PGPASSWORD, or a variable holding the URL's secrets).
    hidden = secrets_in(default_url())
    env = {k: v for k, v in os.environ.items()
           if k not in ("KDRUN_DB", "PGPASSWORD", *ranks.RANK_VARS)
           and not any(h in v for h in hidden)}
    devices = [device] if isinstance(device, str) else device
    env["CUDA_VISIBLE_DEVICES"] = ",".join(cuda_visible(int(d.split(":")[1])) for d in devices
                                           if d != "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    # Run exactly this kdrun, even from a source checkout that is not installed.
    root = str(Path(kdrun.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


_live: set[TrainingProcess] = set()
_live_lock = threading.Lock()


def kill_all() -> None:
    """Kill every training process of this worker (second signal: exit at once)."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.kill()


class TrainingProcess:
    """A fresh interpreter (not a fork: no inherited CUDA or thread state) running
    `kdrun.worker.child`, in its own session so terminal signals reach only the worker.

    A multi-GPU job's ranks share one `messages` queue, each message tagged with its `rank`
    (rank 0's untagged); `argv` replaces the interpreter (an `srun` that starts them all)."""

    def __init__(self, job: dict[str, Any] | None, env: dict[str, str], log_path: Path | None,
                 messages: queue_mod.Queue[dict[str, Any]] | None = None, rank: int = 0,
                 argv: list[str] | None = None) -> None:
        self.rank, self.srun, self.env = rank, argv is not None, env
        self.started = False  # given its job
        self.born = time.monotonic()
        with open(log_path, "ab") if log_path else open(os.devnull, "wb") as log:
            self.proc = subprocess.Popen(
                argv or [sys.executable, "-c", CHILD_BOOT], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, env=env, text=True, bufsize=1,
                start_new_session=True)
        self.messages: queue_mod.Queue[dict[str, Any]] = messages or queue_mod.Queue()
        self._stop_sent = False
        with _live_lock:
            _live.add(self)
        threading.Thread(target=self._pump, daemon=True).start()
        if job is not None:
            self.start(job)

    @classmethod
    def warm(cls, device: str) -> TrainingProcess:
        """A process started ahead of the slot's next job: it imports torch and the training
        code, then waits for a job (touching nothing before it has one), so a drain of short
        jobs is not mostly start-up. Its output goes nowhere until the job names its log."""
        return cls(None, child_env([device]), None)

    def ready_for(self, env: dict[str, str]) -> bool:
        """Still alive, and started with exactly the environment this job's process needs."""
        return self.proc.poll() is None and self.env == env

    def start(self, job: dict[str, Any]) -> None:
        self.started = True
        self._send(json.dumps(job))

    def _pump(self) -> None:
        tag = {"rank": self.rank} if self.rank else {}
        for line in self.proc.stdout:
            try:
                self.messages.put({**tag, **json.loads(line)})
            except ValueError:
                continue
        self.messages.put({**tag, "type": "exited", "code": self.proc.wait()})

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # it is gone; its exit arrives as a message
            pass

    def next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue_mod.Empty:
            return None

    def ack(self) -> None:
        self._send("ack")

    def request_stop(self) -> None:
        if not self._stop_sent:
            self._stop_sent = True
            self._send("stop")

    def signal_kill(self) -> None:
        """SIGKILL its whole session (with its DataLoader workers), without waiting; an srun
        is asked to kill its step's tasks, which live under Slurm's daemons, not under it."""
        if self.proc.poll() is not None:
            return
        try:
            if self.srun:  # two SIGINTs within a second: srun kills every task of its step
                self.proc.send_signal(signal.SIGINT)
                time.sleep(0.1)
                self.proc.send_signal(signal.SIGINT)
            elif hasattr(os, "killpg"):
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal_kill()
        if self.srun:  # give srun a moment to take its remote tasks down, then kill it
            self.wait(SRUN_KILL_S)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()  # it exits when its input closes
        except OSError:
            pass

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self, grace_s: float) -> None:
        """Let it exit on its own for up to `grace_s`, then kill it."""
        self.close_input()
        self.wait(grace_s)
        self.kill()
        self.forget()

    def forget(self) -> None:
        with _live_lock:
            _live.discard(self)


class RankGroup:
    """The processes of a multi-GPU (DDP) job, handled as one training process: rank 0's
    messages drive the supervisor exactly as a single process's would; another rank is heard
    only when it fails; and whatever ends the job takes every rank down at once."""

    def __init__(self, job: dict[str, Any], env: dict[str, str], run_dir: Path,
                 slot: Slot) -> None:
        self.run_dir = run_dir
        self.messages: queue_mod.Queue[dict[str, Any]] = queue_mod.Queue()
        self.ended: set[int] = set()  # ranks > 0 that sent their final message
        self.procs: list[TrainingProcess] = []
        recipe = job["config"]["recipe"]
        nodes, port = recipe.get("nodes", 1), ranks.free_port()
        try:
            if nodes > 1:  # one srun starts them all; Slurm says which rank each one is
                world = recipe["gpus"]  # a job across machines always names it
                argv = ranks.srun_command(nodes, world, slot.device != "cpu",
                                          [sys.executable, "-c", CHILD_BOOT])
                self.procs.append(TrainingProcess(
                    {**job, "world_size": world}, ranks.srun_env(env, world, nodes, port),
                    run_dir / LOG, self.messages, argv=argv))
                return
            world = len(slot.devices)
            for r in range(world):
                device = "cpu" if slot.device == "cpu" else f"cuda:{r}"
                self.procs.append(TrainingProcess(
                    {**job, "device": device, "world_size": world},
                    ranks.rank_env(env, r, world, port), run_dir / ranks.log_name(r),
                    self.messages, rank=r))
        except BaseException:
            self.close(0.0)
            raise

    def next(self, timeout: float) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        while True:
            msg = self._get(end)
            if msg is None:
                return None
            if msg.get("rank", 0) == 0:
                if msg["type"] in ("failed", "exited"):  # maybe only because a peer died:
                    return self._crash(time.monotonic() + PEER_DEATH_S) or msg  # name it
                return msg
            failure = self._failure(msg)
            if failure:
                return failure

    def _get(self, end: float) -> dict[str, Any] | None:
        try:
            return self.messages.get(timeout=max(0.0, end - time.monotonic()))
        except queue_mod.Empty:
            return None

    def _failure(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A rank > 0's message as the job's failure, or None when it is no failure."""
        rank = msg["rank"]
        if msg["type"] in ("succeeded", "interrupted", "failed"):
            self.ended.add(rank)
        if msg["type"] == "failed":
            return {**msg, "error": f"rank {rank}: {msg['error']}"}
        if msg["type"] == "exited" and (msg["code"] != 0 or rank not in self.ended):
            return {"type": "failed", "retry": True, "error":
                    f"rank {rank}: {_died(msg['code'], self.run_dir / ranks.log_name(rank))}"}
        return None

    def _crash(self, end: float) -> dict[str, Any] | None:
        """A rank > 0 that died without a word by `end` (rank 0's error is then only the
        broken connection to it)."""
        while (msg := self._get(end)) is not None:
            if msg.get("rank", 0):
                failure = self._failure(msg)
                if failure and msg["type"] == "exited":
                    return failure
        return None

    def ack(self) -> None:
        self.procs[0].ack()

    def request_stop(self) -> None:
        for p in self.procs:
            p.request_stop()

    def kill(self) -> None:
        for p in self.procs:  # all at once: no rank waits in a collective for a dead one
            p.signal_kill()
        for p in self.procs:
            p.kill()

    def close(self, grace_s: float) -> None:
        """Let every rank exit on its own within `grace_s`, then kill what is left."""
        for p in self.procs:
            p.close_input()
        end = time.monotonic() + grace_s
        for p in self.procs:
            p.wait(max(0.0, end - time.monotonic()))
        self.kill()
        for p in self.procs:
            p.forget()


class Lease:
    """Renews the lease several times per lease length; raises LeaseLost when the database
    says it is gone, or when no renewal got through for a whole lease."""

    def __init__(self, db: Database, claim: queue.Claim, seconds: float, start: float,
                 log: LogFn) -> None:
        self.db, self.claim, self.seconds, self.log = db, claim, seconds, log
        self.valid_until = start + seconds  # `start`: monotonic time just before the claim
        self.next_renewal = start + seconds / RENEWALS_PER_LEASE

    def keep(self) -> None:
        """Renew when due; raise LeaseLost when the lease is gone."""
        now = time.monotonic()
        if now >= self.next_renewal:
            try:
                queue.heartbeat(self.db, self.claim, self.seconds)
                self.valid_until = now + self.seconds
                self.next_renewal = now + self.seconds / RENEWALS_PER_LEASE
            except DB_DOWN as e:
                self.log(f"[yellow]heartbeat failed[/] for job {self.claim.job_id}, retrying: "
                         f"{headline.reason(e)}")
                self.next_renewal = now + self.seconds / (2 * RENEWALS_PER_LEASE)
        self.check()

    def check(self) -> None:
        """Raise LeaseLost once a whole lease passed without a renewal (by our clock)."""
        if time.monotonic() >= self.valid_until:
            raise queue.LeaseLost(f"job {self.claim.job_id}: no heartbeat got through for "
                                  f"{self.seconds:g} s")

    def persist(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one fenced write, retrying while the database is unreachable until our own
        lease clock runs out (LeaseLost): a brief outage never strands the job `running`."""
        while True:
            try:
                return write(*args, **kwargs)
            except DB_DOWN as e:
                self.log(f"[yellow]database unavailable[/] for job {self.claim.job_id}, "
                         f"retrying: {headline.reason(e)}")
                self.check()
                time.sleep(min(PERSIST_RETRY_S, max(0.0, self.valid_until - time.monotonic())))

    def wait_s(self) -> float:
        return max(0.0, min(self.next_renewal, self.valid_until) - time.monotonic())


@dataclass
class WorkerSettings:
    """What a supervisor needs to know from the worker's options."""

    runs_dir: Path
    data_dir: Path
    lease_seconds: float
    backoff_seconds: float
    loader_workers: int | None = None  # None: sized per job from its CPUs
    download: bool = False
    trackers: tuple[str, ...] = ()  # --tracker: logged for every job, besides the grid's


def _died(code: int, log_path: Path) -> str:
    """Why a training process ended without a word, with the end of its log."""
    if code < 0:
        name = signal.Signals(-code).name
        why = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"exited with status {code}"
    tail = log_path.read_text(errors="replace").splitlines()[-20:] if log_path.exists() else []
    return f"training process {why} without reporting an outcome\n" + "\n".join(tail)


def _single(job: dict[str, Any], slot: Slot, run_dir: Path,
            warm: TrainingProcess | None) -> TrainingProcess:
    """The job's one training process: the prestarted one when it is still fit for it."""
    env = child_env([slot.device])
    job = {**job, "log": str((run_dir / LOG).resolve())}
    if warm is not None and warm.ready_for(env):
        warm.start(job)
        rundir.log(run_dir, f"training process {warm.proc.pid}: started "
                            f"{time.monotonic() - warm.born:.1f} s ahead of this job")
        return warm
    if warm is not None:
        warm.close(0.0)
    return TrainingProcess(job, env, run_dir / LOG)


def supervise(db: Database, claim: queue.Claim, slot: Slot, ws: WorkerSettings,
              stop: threading.Event, lease_start: float, log: LogFn,
              progress: ProgressFn, warm: TrainingProcess | None = None,
              prestart: Callable[[], None] | None = None) -> Outcome:
    """Run one claimed job to its end and record the outcome. Raises LeaseLost when the job
    was taken away (expired and reclaimed, or cancelled); nothing more is written then.

    `warm`: a process started ahead for a one-process job (else closed); `prestart` is called
    once this job's process has its imports done, to start the slot's next one."""
    name = claim.run_dir or run_dir_name(claim.job_id, claim.config)
    run_dir = ws.runs_dir / name
    lease = Lease(db, claim, ws.lease_seconds, lease_start, log)
    try:  # a full disk or a bad runs directory fails this attempt, not the worker
        run_dir.mkdir(parents=True, exist_ok=True)
        lease.persist(queue.set_run_dir, db, claim, name)
        label = claim.label or job_label(claim.config)
        rundir.write_job(run_dir, claim.job_id, label, claim.config)
        rundir.log(run_dir, f"job {claim.job_id} {label}: attempt {claim.attempt} on {slot.name}")
        job = {"job_id": claim.job_id, "label": label, "config": claim.config, "run_dir": name,
               "runs_dir": str(ws.runs_dir.resolve()), "data_dir": str(ws.data_dir.resolve()),
               "device": "cpu" if slot.device == "cpu" else "cuda:0", "threads": slot.threads,
               "teacher_checkpoint": claim.teacher_checkpoint,
               "teacher_sha256": claim.teacher_sha256, "attempt": claim.token[:12],
               "checkpoints": claim.checkpoints,
               "loader_workers": ws.loader_workers, "download": ws.download,
               **tracker_store.for_child(db, claim.job_id, claim.config, ws.trackers)}
        nodes = claim.config["recipe"].get("nodes", 1)
        refusal = ranks.multi_node_refusal(nodes) if nodes > 1 else None
        if refusal:  # retrying on this worker cannot help; a Slurm pilot of enough nodes can
            state = lease.persist(queue.fail, db, claim, refusal, retry=False,
                                  backoff_s=ws.backoff_seconds)
            rundir.log(run_dir, f"attempt {claim.attempt} failed: {refusal}")
            return Outcome(state, refusal)
        if len(slot.devices) > 1 or nodes > 1:  # a multi-GPU (DDP) job: one process per rank
            proc: TrainingProcess | RankGroup = RankGroup(job, child_env(slot.devices), run_dir,
                                                          slot)
        else:
            proc = _single(job, slot, run_dir, warm)
    except OSError as e:
        error = f"{headline.os_error(e)}\n{traceback.format_exc()}"
        state = queue.fail(db, claim, error, retry=True, backoff_s=ws.backoff_seconds)
        again = " (will be retried)" if state == "queued" else ""
        return Outcome(state, headline.first_line(error) + again, suspect=True)
    outcome = None
    try:
        while outcome is None:
            if stop.is_set():
                proc.request_stop()
                if cut_due(stop):  # its epoch would outlast the scheduler's patience
                    proc.kill()
                    return _handle(db, claim, {"type": "interrupted", "reason": "stopped "
                                               "mid-epoch (cut at the stop deadline)"},
                                   proc, lease, ws, run_dir, slot, progress)
            lease.keep()
            msg = proc.next(timeout=min(lease.wait_s(), 1.0))  # 1 s: see a stop signal soon
            if msg is not None and msg["type"] == "started" and prestart is not None:
                prestart()  # its imports are done: the slot's next process may start its own
            if msg is not None:
                outcome = _handle(db, claim, msg, proc, lease, ws, run_dir, slot, progress)
        return outcome
    finally:
        proc.close(GRACE_S if outcome is not None else 0.0)
        progress(slot.name, None, 0, 0)


def _handle(db: Database, claim: queue.Claim, msg: dict[str, Any],
            proc: TrainingProcess | RankGroup, lease: Lease, ws: WorkerSettings, run_dir: Path,
            slot: Slot, progress: ProgressFn) -> Outcome | None:
    """Turn one message from the training process into database writes."""
    kind = msg["type"]
    if kind == "progress":
        epochs = claim.config["recipe"]["epochs"]
        progress(slot.name, f"job {claim.job_id} epoch {msg['epoch']}/{epochs}",
                 msg["done"], msg["total"])
    elif kind == "started":
        lease.persist(queue.set_provenance, db, claim, msg["provenance"])
    elif kind == "epoch":
        # The epoch and its checkpoint file, in one fenced write: a worker that lost its lease
        # records nothing, so its file is never the one a resume loads (kdrun.checkpoints).
        dropped = lease.persist(queue.record_epoch, db, claim, msg["row"], msg["progress"],
                                msg.get("checkpoint"))
        lease.check()  # frozen since that write? then stop before anything more
        proc.ack()
        checkpoints.discard(ws.runs_dir, dropped)
    elif kind == "tracker":  # a TensorBoard / W&B run started: keep its id for resuming
        tracker_store.record(db, claim, msg["run"])
    elif kind == "notice":
        queue.checkpoint_notice(db, claim, msg["text"], msg["bad"])
        checkpoints.discard(ws.runs_dir, msg["bad"])
    elif kind == "succeeded":
        kept = lease.persist(queue.succeed, db, claim, msg["result"], msg["teacher"])
        checkpoints.settle(ws.runs_dir, run_dir, msg["result"]["checkpoint"], kept)
        rundir.log(run_dir, f"succeeded: best top-1 {msg['result']['best_top1']:.2f}")
        return Outcome("succeeded", f"best top-1 {msg['result']['best_top1']:.2f}")
    elif kind == "interrupted":
        if lease.persist(queue.requeue, db, claim, msg["reason"]) == "failed":
            return Outcome("failed", f"{msg['reason']}; handed back more than "
                                     f"{queue.MAX_HANDBACKS} times, failed")
        rundir.log(run_dir, f"interrupted: {msg['reason']}; back in the queue")
        return Outcome("queued", f"{msg['reason']}; back in the queue, attempt not counted")
    elif kind in ("failed", "exited"):
        retry = msg.get("retry", True)
        error = msg["error"] if kind == "failed" else _died(msg["code"], run_dir / LOG)
        state = lease.persist(queue.fail, db, claim, error, retry=retry,
                              backoff_s=ws.backoff_seconds)
        again = " (will be retried)" if state == "queued" else ""
        rundir.log(run_dir, f"attempt {claim.attempt} failed{again}: "
                   f"{error if kind == 'failed' else headline.first_line(error)}")
        return Outcome(state, headline.first_line(error) + again, suspect=retry)
    return None
