"""Workers: claim jobs from the queue and train each in a supervised child process."""

from kdrun.worker.loop import FailureBreaker, Summary, WorkerOptions, work
from kdrun.worker.supervisor import Outcome, Slot, run_dir_name

__all__ = ["FailureBreaker", "Outcome", "Slot", "Summary", "WorkerOptions", "run_dir_name",
           "work"]
