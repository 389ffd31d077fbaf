"""Pairwise ranking primitives for CMKD and RKKD, with bounded extra memory.

Both the differentiable Kendall tau and the pairwise-sigmoid soft rank look at all C^2 class
pairs. Broadcasting `[B, C, 1] - [B, 1, C]` and letting autograd save the intermediates needs
several `[B, C, C]` tensors (~5 GB at B=256, C=1000). Here each is a custom autograd Function
that walks blocks of rows of at most `CHUNK_ELEMENTS` pair entries, and whose backward
recomputes each block and applies the analytic derivative, so the peak extra memory is a few
blocks (tens of MB) whatever B and C are; when everything fits in one block, that block is
kept for the backward instead, as autograd would. The teacher is always a constant. Pair
sums run in float32 at least, with autocast off (1M-term sums in half precision are useless).
"""

from __future__ import annotations

import functools

import torch

# Pair entries in one block, by device type; up to three blocks are alive at a time (16 MB
# each on CPU, 64 MB on GPU in float32). Larger GPU blocks mean fewer kernel launches.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}


def _blocks(z: torch.Tensor, chunk: int | None) -> list[slice]:
    """Row blocks R = [start, stop): block R holds the pairs (i in R, j >= start), so the
    blocks tile the upper triangle i <= j, each pair once (or twice inside R x R)."""
    batch, classes = z.shape
    budget = CHUNK_ELEMENTS.get(z.device.type, CHUNK_ELEMENTS["cpu"])
    out, start = [], 0
    while start < classes:
        rows = chunk or max(1, budget // (batch * (classes - start)))
        out.append(slice(start, min(start + rows, classes)))
        start = out[-1].stop
    return out


def _no_autocast(fn):
    """Run a Function's forward/backward with autocast off (the wrappers cast to float32+)."""

    @functools.wraps(fn)
    def wrapper(ctx, x, *args):
        with torch.autocast(x.device.type, enabled=False):
            return fn(ctx, x, *args)

    return wrapper


def _pair_diff(z: torch.Tensor, rows: slice) -> torch.Tensor:
    """`z[:, i] - z[:, j]` for i in `rows`, j >= rows.start: a fresh `[B, rows, C - start]`
    block whose first `len(rows)` columns are the pairs inside the block."""
    return z[:, rows, None] - z[:, None, rows.start :]


class _KendallTau(torch.autograd.Function):
    """Per-sample `1/(C(C-1)) * sum_{i != j} a_ij * t_ij` with `a_ij = tanh(ks*(zs_i - zs_j))`
    and `t_ij` the teacher's `tanh(kt*(zt_i - zt_j))` or, when `kt` is None, its sign.

    Both factors are odd in (i, j), so the sum is twice the sum over i < j and only the
    upper triangle is computed: a block adds 2 * (its sum) - (its inner R x R part, whose
    pairs it already holds in both orders)."""

    @staticmethod
    def pairs(zs, zt, rows, sign_teacher):
        """Student and teacher blocks, from logits already multiplied by ks / kt."""
        a = _pair_diff(zs, rows).tanh_()
        t = _pair_diff(zt, rows)
        return a, t.sign_() if sign_teacher else t.tanh_()

    @staticmethod
    @_no_autocast
    def forward(ctx, zs, zt, ks, kt, chunk):
        B, C = zs.shape
        zs, zt = zs * ks, zt * (kt or 1.0)  # scale per logit, not per pair
        blocks = _blocks(zs, chunk)
        tau = zs.new_zeros(B)
        ctx.block = None
        for rows in blocks:
            a, t = _KendallTau.pairs(zs, zt, rows, kt is None)
            n = rows.stop - rows.start
            total = torch.bmm(a.view(B, 1, -1), t.view(B, -1, 1)).view(B)  # sum a*t, no temp
            if a.shape[2] == n:  # nothing beyond the block: all pairs are inner
                tau += total
            else:
                tau += 2 * total - (a[:, :, :n] * t[:, :, :n]).sum((1, 2))
            if len(blocks) == 1:  # small: keep it for backward instead of recomputing
                ctx.block = (a, t)
            del a, t  # free this block before the next one is allocated
        ctx.save_for_backward(zs, zt)
        ctx.ks, ctx.sign_teacher, ctx.blocks = ks, kt is None, blocks
        return tau / (C * (C - 1))

    @staticmethod
    @_no_autocast
    def backward(ctx, grad_tau):
        # d/dzs_m sum_{i != j} a_ij t_ij = 2 * ks * sum_j g_mj with g = (1 - a^2) * t, g_ji = -g_ij
        zs, zt = ctx.saved_tensors
        B, C = zs.shape
        grad = torch.zeros_like(zs)
        for rows in ctx.blocks:
            if ctx.block is None:
                a, t = _KendallTau.pairs(zs, zt, rows, ctx.sign_teacher)
                a.square_()
            else:  # not in place: a second backward (retain_graph) reuses the block
                a, t = ctx.block[0].square(), ctx.block[1]
            g = a.neg_().add_(1).mul_(t)
            grad[:, rows] += g.sum(2)  # row i of the block: pairs (i, j >= start)
            grad[:, rows.stop :] -= g[:, :, rows.stop - rows.start :].sum(1)  # seen from j
            del a, t, g
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
    """`r_i = 1/2 + sum_j s_ij`, `s_ij = sigmoid((z_i - z_j) / eps)` (the j = i term adds the
    other 1/2). Only the upper triangle is computed: `s_ji = 1 - s_ij`."""

    @staticmethod
    @_no_autocast
    def forward(ctx, z, eps, chunk):
        z = z / eps
        blocks = _blocks(z, chunk)
        ranks = torch.full_like(z, 0.5)
        ctx.block = None
        for rows in blocks:
            n = rows.stop - rows.start
            s = _pair_diff(z, rows).sigmoid_()
            ranks[:, rows] += s.sum(2)
            ranks[:, rows.stop :] += n - s[:, :, n:].sum(1)  # s_ji = 1 - s_ij
            if len(blocks) == 1:  # small: keep it for backward
                ctx.block = s
            del s
        ctx.save_for_backward(z)
        ctx.eps, ctx.blocks = eps, blocks
        return ranks

    @staticmethod
    @_no_autocast
    def backward(ctx, g):
        # With s'_mj = sigmoid'((z_m - z_j)/eps), symmetric in (m, j):
        # dL/dz_m = 1/eps * sum_j s'_mj * (g_m - g_j) = (g_m * rowsum(s') - (s' @ g)_m) / eps
        (z,) = ctx.saved_tensors
        grad = torch.zeros_like(z)
        for rows in ctx.blocks:
            if ctx.block is None:
                s = _pair_diff(z, rows).sigmoid_()
                s.addcmul_(s, s, value=-1)  # s' = s - s^2, in place
            else:
                s = torch.addcmul(ctx.block, ctx.block, ctx.block, value=-1)
            cols, n = slice(rows.start, None), rows.stop - rows.start
            grad[:, rows] += g[:, rows] * s.sum(2) - torch.bmm(s, g[:, cols, None])[:, :, 0]
            beyond = s[:, :, n:]  # the same pairs seen from j >= rows.stop
            grad[:, rows.stop :] += (
                g[:, rows.stop :] * beyond.sum(1) - torch.bmm(g[:, None, rows], beyond)[:, 0]
            )
            del s, beyond
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
