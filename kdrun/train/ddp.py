"""Multi-process data-parallel training (torch.distributed + DistributedDataParallel).

A job with `recipe.gpus: N` runs as N processes started by the worker's supervisor, each
with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in its environment (as
torchrun sets them). `Dist.from_env()` reads them; without them (or WORLD_SIZE=1) the job is
the plain single process and nothing here runs: no process group, no wrapper, no collective.

What the numbers mean under DDP (see also kdrun.data.shards):
- `batch_size` stays the global batch. Every rank draws the same global order and
  augmentation stream from the job's seed and trains on its contiguous 1/N slice; DDP
  averages the gradients, and a rank's loss is weighted by its share of the global batch
  (exactly 1 when N divides the batch), so a loss that is a mean over samples gets the
  single-process gradient.
- BatchNorm is per replica (no SyncBN): each rank normalizes its shard with the shard's own
  statistics, as the authors' DDP code does, which is why `gpus` is part of a job's identity.
  Running statistics are rank 0's (DDP broadcasts them before every forward; they are
  broadcast once more before evaluation), so evaluation and the checkpoints use rank 0's.
- A batch-level loss term (DIST's intra-class correlation, CMKD's batch-rank weighting and
  DIST part, MLKD's batch and class levels) sees its replica's shard, batch_size/N samples,
  as in the authors' DDP code.
- A method's own trainable parameters (ctkd's temperature) are not inside the DDP module:
  their gradients are averaged over ranks here (`average_grads`) after every backward.
- Train loss, top-1 and the loss components are sums over all ranks; evaluation covers each
  image once and computes top-k over the full split (exactly the single-process numbers).

Fast switches (kdrun.train.fast): amp (bf16 autocast) and channels_last apply unchanged.
compile applies, but without CUDA graphs ("default" mode on CUDA too): CUDA-graph trees and
DDP's gradient all-reduce hooks do not mix reliably (pytorch/pytorch#128218: crashes with
reduce-overhead under DDP). Evaluation runs the unwrapped eager module.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from kdrun.data.shards import Shard

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Ranks wait for each other at every epoch end (rank 0 saves and reports meanwhile).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Dist:
    """This process's rank in the job's process group (world 1: no group at all)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Dist:
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        missing = [k for k in ENV if k not in env and k != "LOCAL_RANK"]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set")
        rank = int(env["RANK"])
        return cls(rank, int(env.get("LOCAL_RANK", rank)), world)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world)

    def device(self, dev: torch.device) -> torch.device:
        """A CUDA rank uses cuda:LOCAL_RANK (CUDA_VISIBLE_DEVICES lists the job's GPUs)."""
        return torch.device("cuda", self.local_rank) if self.enabled and dev.type == "cuda" \
            else dev

    @contextmanager
    def group(self, dev: torch.device) -> Iterator[None]:
        """The job's process group (nccl on CUDA, gloo on CPU), destroyed on the way out."""
        if not self.enabled:
            yield
            return
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=self.rank,
                                 world_size=self.world, timeout=TIMEOUT)
        try:
            yield
        finally:
            tdist.destroy_process_group()

    # -- collectives (each a no-op at world 1) -------------------------------------------

    @staticmethod
    def _comm(t: Tensor) -> Tensor:
        """`t` where the backend can reduce it (nccl: the rank's GPU, gloo: the CPU)."""
        if tdist.get_backend() == "nccl":
            return t.to(torch.device("cuda", torch.cuda.current_device()))
        return t.cpu()

    def all_sum(self, t: Tensor) -> Tensor:
        """The sum of `t` over all ranks (a new tensor on t's device)."""
        if not self.enabled:
            return t
        c = self._comm(t.detach().clone())
        tdist.all_reduce(c, tdist.ReduceOp.SUM)
        return c.to(t.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (the stop flag: all ranks stop)."""
        if not self.enabled:
            return flag
        t = self._comm(torch.tensor([int(flag)]))
        tdist.all_reduce(t, tdist.ReduceOp.MAX)
        return bool(t.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, t: Tensor, counts: list[int]) -> Tensor:
        """Every rank's rows of `t` (rank r holds counts[r]) concatenated in rank order, on
        the CPU: padded to the largest count for the all-gather, trimmed after."""
        if not self.enabled:
            return t
        most = max(counts)
        pad = t.new_zeros((most, *t.shape[1:]))
        pad[: t.shape[0]] = t
        pad = self._comm(pad)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        tdist.all_gather(parts, pad)
        return torch.cat([p[:n].cpu() for p, n in zip(parts, counts, strict=True)])

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if not self.enabled:
            return
        for b in model.buffers():
            c = self._comm(b.detach())
            tdist.broadcast(c, src=0)
            if c.data_ptr() != b.data_ptr():
                b.data.copy_(c)

    def average_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of parameters outside the DDP module over the ranks."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.enabled or not grads:
            return
        flat = self._comm(torch.cat([g.reshape(-1) for g in grads]))
        tdist.all_reduce(flat, tdist.ReduceOp.SUM)
        flat = flat.to(grads[0].device).div_(self.world)
        i = 0
        for g in grads:
            g.copy_(flat[i : i + g.numel()].view_as(g))
            i += g.numel()

    def same_everywhere(self, *modules: nn.Module) -> bool:
        """Whether every rank holds bit-identical parameters and buffers (one digest each)."""
        if not self.enabled:
            return True
        h = hashlib.sha256()
        for m in modules:
            for t in (*m.parameters(), *m.buffers()):
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        every = self.all_gather_object(h.hexdigest())
        return all(d == every[0] for d in every)

    def wrap(self, model: nn.Module, dev: torch.device) -> nn.Module:
        """DistributedDataParallel around `model` (world 1: the model itself). Save
        `model`'s own state_dict, never the wrapper's (its keys gain a `module.` prefix)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)

