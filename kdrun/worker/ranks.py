"""Where the ranks of a multi-GPU (DDP) job run, and what each one is told.

A job with `recipe.gpus: N` trains as N processes, one per device. On one machine the
supervisor starts them itself, torchrun-style: every rank sees all of the job's GPUs
(CUDA_VISIBLE_DEVICES) and uses `cuda:LOCAL_RANK`, and they meet at a free port on
127.0.0.1. Across machines (`recipe.nodes: M`) one `srun` inside the worker's Slurm
allocation starts them, and each rank learns who it is from Slurm (SLURM_PROCID, ...;
see `from_slurm`), because only Slurm knows which task landed where.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

FROM_SLURM = "KDRUN_RANKS_FROM_SLURM"  # set in an srun-launched rank's environment
# Set only by the supervisor: inherited from the worker's own environment (a worker started
# under torchrun, say) they would make a 1-GPU job's process think it is one rank of many.
RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT", FROM_SLURM)


def log_name(rank: int) -> str:
    """Rank 0 writes the job's usual train.log; the others a log of their own beside it."""
    return "train.log" if rank == 0 else f"train.rank{rank}.log"


def free_port() -> int:
    """A TCP port nobody listens on now, for the ranks' rendezvous (MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rank_env(base: Mapping[str, str], rank: int, world: int, port: int,
             addr: str = "127.0.0.1") -> dict[str, str]:
    """One local rank's environment: `base` (already scrubbed of secrets) plus the variables
    torch.distributed reads. On one machine LOCAL_RANK is the rank."""
    return {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": addr, "MASTER_PORT": str(port)}


def allocation_nodes(env: Mapping[str, str] = os.environ) -> int:
    """Nodes of the Slurm allocation this worker runs in (0: not inside one)."""
    if not env.get("SLURM_JOB_ID"):
        return 0
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def multi_node_refusal(nodes: int, env: Mapping[str, str] = os.environ) -> str | None:
    """Why this worker cannot run a job over `nodes` machines, or None when it can."""
    have = allocation_nodes(env)
    if have >= nodes:
        return None
    where = (f"its Slurm allocation has {have} node(s)" if have else
             "it is not running inside a Slurm allocation")
    return (f"this job needs {nodes} nodes (recipe.nodes) but the worker that claimed it cannot "
            f"start ranks on other machines: {where}; run such jobs from `kdrun slurm submit "
            f"--nodes-per-worker {nodes}`")


def srun_command(nodes: int, world: int, gpus: bool, argv: list[str]) -> list[str]:
    """One srun step that starts all `world` ranks, `world / nodes` per node, inside the
    worker's allocation. --kill-on-bad-exit: one rank dying takes the step down."""
    per_node = world // nodes
    cmd = ["srun", f"--nodes={nodes}", f"--ntasks={world}", f"--ntasks-per-node={per_node}",
           "--kill-on-bad-exit=1", "--input=all", "--export=ALL"]
    if gpus:
        cmd.append(f"--gpus-per-node={per_node}")
    return [*cmd, *argv]


def srun_env(base: Mapping[str, str], world: int, nodes: int, port: int) -> dict[str, str]:
    """The srun step's environment (exported to every rank): rank 0 is on this host. The GPUs
    are Slurm's to hand out per node, so our own CUDA_VISIBLE_DEVICES is not passed on."""
    env = {k: v for k, v in base.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, FROM_SLURM: "1", "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world // nodes), "MASTER_ADDR": socket.gethostname(),
            "MASTER_PORT": str(port)}


def from_slurm(env: MutableMapping[str, str]) -> None:
    """In an srun-launched rank: RANK and LOCAL_RANK from the task Slurm made it."""
    if env.get(FROM_SLURM) == "1":
        env["RANK"] = env["SLURM_PROCID"]
        env["LOCAL_RANK"] = env["SLURM_LOCALID"]
