"""Pairwise ranking primitives for CMKD and RKKD, in O(C) memory per sample.

Both the differentiable Kendall tau and the pairwise-sigmoid soft rank look at all C^2 class
pairs. Broadcasting `[B, C, 1] - [B, 1, C]` and letting autograd save the intermediates needs
several `[B, C, C]` tensors (~5 GB at B=256, C=1000). Here each is a custom autograd Function
that walks blocks of rows whose size is bounded by `CHUNK_ELEMENTS`, and whose backward
recomputes the block and applies the analytic derivative, so the peak extra memory is a few
blocks (tens of MB) whatever B and C are. The teacher side is always treated as a constant.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

# Elements of one [B, rows, C] block; two or three such blocks are alive at a time.
CHUNK_ELEMENTS = 1 << 22


def _row_blocks(batch: int, classes: int, chunk: int | None) -> Iterator[slice]:
    rows = chunk or max(1, CHUNK_ELEMENTS // max(1, batch * classes))
    for start in range(0, classes, rows):
        yield slice(start, min(start + rows, classes))


def _pair_diff(z: torch.Tensor, rows: slice) -> torch.Tensor:
    """`z[:, i] - z[:, j]` for i in `rows`, all j: a fresh `[B, rows, C]` block."""
    return z[:, rows, None] - z[:, None, :]


class _KendallTau(torch.autograd.Function):
    """Per-sample `1/(C(C-1)) * sum_{i != j} tanh(ks*ds_ij) * t_ij`, with `t_ij` the teacher's
    `tanh(kt*dt_ij)` or, when `kt` is None, `sign(dt_ij)`. Since both factors are odd in
    (i, j) the ordered-pair sum is twice the sum over i < j."""

    @staticmethod
    def teacher_block(zt: torch.Tensor, rows: slice, kt: float | None) -> torch.Tensor:
        d = _pair_diff(zt, rows)
        return d.sign_() if kt is None else d.mul_(kt).tanh_()

    @staticmethod
    def forward(ctx, zs, zt, ks, kt, chunk):
        B, C = zs.shape
        tau = zs.new_zeros(B)
        for rows in _row_blocks(B, C, chunk):
            a = _pair_diff(zs, rows).mul_(ks).tanh_()
            a.mul_(_KendallTau.teacher_block(zt, rows, kt))
            tau += a.sum((1, 2))
        ctx.save_for_backward(zs, zt)
        ctx.ks, ctx.kt, ctx.chunk = ks, kt, chunk
        return tau / (C * (C - 1))

    @staticmethod
    def backward(ctx, grad_tau):
        # d/dzs_m sum_{i != j} a_ij t_ij = 2 * ks * sum_j (1 - a_mj^2) * t_mj
        zs, zt = ctx.saved_tensors
        B, C = zs.shape
        grad = torch.empty_like(zs)
        for rows in _row_blocks(B, C, ctx.chunk):
            a = _pair_diff(zs, rows).mul_(ctx.ks).tanh_()
            a = a.square_().neg_().add_(1).mul_(_KendallTau.teacher_block(zt, rows, ctx.kt))
            grad[:, rows] = a.sum(2)
        scale = grad_tau[:, None] * (2 * ctx.ks / (C * (C - 1)))
        return grad * scale, None, None, None, None


def kendall_tau(
    student: torch.Tensor,
    teacher: torch.Tensor,
    k: float,
    teacher_k: float | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Differentiable Kendall tau per sample (RKKD): `sign` replaced by `tanh(k * .)`.

    `tau = 2/(C(C-1)) * sum_{i<j} tanh(k*(s_i - s_j)) * g(t_i - t_j)` with `g = tanh(teacher_k
    * .)`, or `g = sign` when `teacher_k` is None. Tied pairs contribute 0 (tanh(0) = 0), so
    as k grows this tends to the exact Kendall tau-a. `chunk` (rows per block) is for tests.
    """
    if student.shape != teacher.shape or student.dim() != 2 or student.shape[1] < 2:
        raise ValueError(f"kendall_tau expects two [B, C>=2] tensors, got {student.shape}")
    dtype = torch.promote_types(student.dtype, torch.float32)  # no half-precision pair sums
    return _KendallTau.apply(
        student.to(dtype), teacher.detach().to(dtype), float(k), teacher_k, chunk
    )


class _SoftRank(torch.autograd.Function):
    """`r_i = 1/2 + sum_j sigmoid((z_i - z_j) / eps)` (the j = i term adds the other 1/2)."""

    @staticmethod
    def forward(ctx, z, eps, chunk):
        B, C = z.shape
        ranks = torch.empty_like(z)
        for rows in _row_blocks(B, C, chunk):
            ranks[:, rows] = _pair_diff(z, rows).div_(eps).sigmoid_().sum(2)
        ctx.save_for_backward(z)
        ctx.eps, ctx.chunk = eps, chunk
        return ranks + 0.5

    @staticmethod
    def backward(ctx, g):
        # With s'_mj = sigmoid'((z_m - z_j)/eps), symmetric in (m, j):
        # dL/dz_m = 1/eps * sum_j s'_mj * (g_m - g_j) = (g_m * rowsum(s') - (s' @ g)_m) / eps
        (z,) = ctx.saved_tensors
        B, C = z.shape
        grad = torch.empty_like(z)
        for rows in _row_blocks(B, C, ctx.chunk):
            s = _pair_diff(z, rows).div_(ctx.eps).sigmoid_()
            s = s.sub_(s.square())
            grad[:, rows] = g[:, rows] * s.sum(2) - torch.bmm(s, g[:, :, None])[:, :, 0]
        return grad / ctx.eps, None, None


def soft_rank(z: torch.Tensor, eps: float, chunk: int | None = None) -> torch.Tensor:
    """Pairwise-sigmoid soft rank, ascending and 1-based: `r_i = 1 + sum_{j != i}
    sigmoid((z_i - z_j) / eps)`. As eps -> 0 it tends to the exact rank, with tied entries
    getting their average rank (sigmoid(0) = 1/2), i.e. exactly what `exact_rank` returns."""
    if z.dim() != 2:
        raise ValueError(f"soft_rank expects [B, C], got {tuple(z.shape)}")
    return _SoftRank.apply(z.to(torch.promote_types(z.dtype, torch.float32)), float(eps), chunk)


def exact_rank(z: torch.Tensor) -> torch.Tensor:
    """Ascending 1-based ranks per row, ties sharing their average rank (as Spearman needs)."""
    z = z.detach().contiguous()
    s = z.sort(-1).values
    below = torch.searchsorted(s, z, right=False)
    up_to = torch.searchsorted(s, z, right=True)
    return (below + up_to + 1).to(z.dtype) / 2
