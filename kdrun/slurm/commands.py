"""Slurm's client commands (sbatch, squeue, scancel, scontrol), run as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess

from kdrun.errors import UserError

TIMEOUT_S = 60


def require(tool: str) -> str:
    """The tool's path, or one line saying it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"{tool} not found on PATH: `kdrun slurm` needs Slurm's client "
                        "commands (run it on a login node of the cluster, or install "
                        "slurm-client)")
    return path


def run(tool: str, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run a Slurm command; its stdout. A failure is one line with Slurm's own message."""
    try:
        done = subprocess.run([require(tool), *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"{tool} did not answer within {TIMEOUT_S} s: is slurmctld "
                        "reachable?") from None
    if check and done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{tool} failed: {why[-1] if why else f'exit {done.returncode}'}")
    return done.stdout


def sbatch(script: str, db_url: str) -> str:
    """Submit `script`; the Slurm job id. The database URL travels in the environment
    sbatch exports to the job (KDRUN_DB), never on a command line or in the script."""
    env = {**os.environ, "KDRUN_DB": db_url}
    out = run("sbatch", "--parsable", "--export=ALL", script, env=env)
    return out.strip().split(";")[0]


def squeue(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """Slurm's view of these jobs (array job ids or job_task ids): id -> (state, elapsed,
    reason or node). Jobs Slurm no longer knows are missing. {} when squeue is missing."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    out = run("squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%M|%R",
              check=False)
    rows = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            rows[parts[0]] = (parts[1], parts[2], parts[3])
    return rows


def signal_batch(job_ids: list[str], signal: str) -> None:
    """Send `signal` to the batch shell of each job (the pilot's worker: it is exec'd)."""
    if job_ids:
        run("scancel", "--batch", f"--signal={signal}", *job_ids, check=False)


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        run("scancel", *job_ids, check=False)


def kill_wait() -> int | None:
    """Slurm's KillWait: seconds between its SIGTERM and SIGKILL (None when unknown)."""
    if shutil.which("scontrol") is None:
        return None
    for line in run("scontrol", "show", "config", check=False).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "KillWait":
            digits = value.strip().split()[0] if value.strip() else ""
            return int(digits) if digits.isdigit() else None
    return None


def requeue(job_id: str) -> None:
    run("scontrol", "requeue", job_id)
