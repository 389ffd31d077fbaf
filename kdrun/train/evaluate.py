"""Evaluation: top-1/top-5 accuracy, and how closely a student follows its teacher.

Under DDP each rank predicts its contiguous run of whole eval batches (kdrun.data.shards)
and `predict_shards` gathers every rank's logits in order: each image once, in the batch it
has in a single process, so the metrics are computed once over exactly the single-process
logits (no DistributedSampler padding counted twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from kdrun.train.ddp import Dist


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device):
    """(logits float32 [N, C], labels [N]) over a loader, both on the CPU; model in eval mode."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for x, y in loader:
        outs.append(model(x.to(device, non_blocking=True)).float())
        ys.append(y)
    model.train(was_training)
    return torch.cat(outs).cpu(), torch.cat(ys).cpu()  # a device loader yields labels on the GPU


def predict_shards(model: nn.Module, loader: DataLoader, device: torch.device, dist: Dist,
                   counts: list[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict` over the whole split from this rank's shard (`loader`, counts[rank] images;
    rank r holds counts[r]); every rank gets all of it, on the CPU."""
    if counts[dist.rank]:
        logits, y = predict(model, loader, device)
    else:  # more ranks than eval batches: this one has none
        logits, y = torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.int64)
    return dist.gather_rows(logits, counts), dist.gather_rows(y, counts)


def topk(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Accuracy in percent for each k (k capped at the number of classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels.view(-1, 1)
    return [100.0 * hit[:, : min(k, logits.shape[1])].any(1).float().mean().item() for k in ks]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(dim=1).argsort(dim=1).to(torch.float64)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row Spearman rho (logits are continuous, so ties are ignored)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def kendall(a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Per-row exact Kendall tau-b over all class pairs, in row chunks to bound memory."""
    out = []
    for i in range(0, a.shape[0], chunk):
        sa = torch.sign(a[i : i + chunk, :, None] - a[i : i + chunk, None, :])
        sb = torch.sign(b[i : i + chunk, :, None] - b[i : i + chunk, None, :])
        num = (sa * sb).sum((1, 2))
        den = (sa.abs().sum((1, 2)) * sb.abs().sum((1, 2))).sqrt().clamp_min(1e-12)
        out.append(num / den)
    return torch.cat(out)


def agreement(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement (%), mean Spearman rho, mean Kendall tau and KL(teacher || student)."""
    s, t = student.double(), teacher.double()
    kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")
    return {
        "agree_top1": 100.0 * (s.argmax(1) == t.argmax(1)).double().mean().item(),
        "spearman": spearman(s, t).mean().item(),
        "kendall": kendall(s, t).mean().item(),
        "kl": kl.item(),
    }
