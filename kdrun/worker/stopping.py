"""How a worker stops when told to: by a person (Ctrl-C, SIGTERM) or by a cluster scheduler.

Slurm warns a job with SIGUSR1 (`--signal=B:USR1@S`) S seconds before its time limit, and at
the limit, on `scancel`, on pre-emption and on `scontrol requeue` it sends SIGTERM to every
process of the job, then SIGKILL after KillWait seconds. So the training processes ignore
SIGTERM and SIGINT (only the supervisor acts), and the first SIGUSR1 or SIGTERM means: stop
claiming, let each running job finish its epoch, checkpoint and go back to the queue without
using an attempt. With `stop_within` set (the sbatch script sets it below KillWait), a job
whose epoch would not end in time is cut instead: its training process is killed and it
resumes from its last checkpoint. Only a second SIGTERM/SIGINT (a person insisting) exits at
once; a SIGTERM after the SIGUSR1 warning is Slurm's time limit, not insistence.
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# The training process: started with these ignored, before anything else runs in it.
CHILD_BOOT = ("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "signal.signal(signal.SIGINT, signal.SIG_IGN); import runpy; "
              "runpy.run_module('kdrun.worker.child', run_name='__main__')")


def ignore_stop_signals() -> None:
    """In the training process (and so in its DataLoader workers, which inherit it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Stop(threading.Event):
    """The worker's stop flag, plus when running jobs must be cut if their epoch has not
    ended (monotonic time; None: wait for the epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_at: float | None = None
        self.insisted = False  # a SIGTERM/SIGINT was received already

    def cut_within(self, seconds: float | None) -> None:
        if seconds is not None:
            at = time.monotonic() + seconds
            self.cut_at = at if self.cut_at is None else min(self.cut_at, at)


def cut_due(stop: threading.Event) -> bool:
    """Whether a running job must be cut now rather than finish its epoch."""
    at = getattr(stop, "cut_at", None)
    return stop.is_set() and at is not None and time.monotonic() >= at
