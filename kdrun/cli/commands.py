"""Which module defines each command, and the line `kdrun --help` shows for it.

The command modules import sqlalchemy, alembic, pandas or the grid machinery at the top (a
second or more, before any command runs), so `kdrun --help` lists the commands from this
table without importing them, and a command imports its own module only (kdrun.cli.app.Group).
tests/test_light_imports.py checks the table against the modules: a new command needs a row.
"""

from __future__ import annotations

# (command or group name, module under kdrun.cli, the first paragraph of its help), in the
# order `kdrun --help` lists them.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("export", "export", "Dump jobs, results and per-epoch metrics (joined by job_id) for pandas."),
    ("grids", "grids",
     "List the grids shipped with kdrun (use a name with --grid, or copy one with init)."),
    ("init", "grids", "Copy a shipped grid to a file of your own, to edit and enqueue."),
    ("prune", "hygiene",
     "Remove cancelled jobs (and failed ones with --failed) with their results and epochs."),
    ("delete", "hygiene",
     "Delete jobs (any state but running) with their attempts, epochs and results."),
    ("enqueue", "jobs", "Expand a grid into jobs and add the ones not queued yet (idempotent)."),
    ("status", "jobs",
     "Jobs per state, running jobs with epoch, loss and ETA, blocked and failed jobs."),
    ("cancel", "jobs",
     "Cancel queued and running jobs; a running job's worker stops it within a heartbeat."),
    ("retry", "jobs", "Put failed (and cancelled) jobs back in the queue with fresh attempts."),
    ("reap", "jobs",
     "Take back jobs whose worker stopped renewing its lease (workers also do this)."),
    ("methods", "methods",
     "List the methods, or show each resolved hyperparameter of NAME and its source."),
    ("models", "models",
     "List the model zoo: name, dataset, parameters, MACs (conv + linear) per image."),
    ("report", "report", "Aggregate results over seeds into a paper-style table."),
    ("show", "show",
     "Everything about one job: config, attempts with errors and tracebacks, metrics, paths."),
    ("logs", "show", "Print a job's training log (RUNS/<job>/train.log); `-f` follows it live."),
    ("worker", "work", "Claim runnable jobs and train each in a supervised child process."),
    ("db", "db", "Database schema: create or migrate, show the version."),
    ("slurm", "slurm", "Run workers on a Slurm cluster as a job array of pilots."),
    ("teacher", "teachers",
     "Teacher checkpoints: import published ones, list the registry, build logit caches."),
)

MODULES = tuple(dict.fromkeys(module for _, module, _ in COMMANDS))  # each once, in order
