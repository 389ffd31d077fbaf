"""Ranking primitives: the chunked fast paths against naive broadcast references and
brute-force exact Kendall tau / Spearman rho."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdrun.methods import create, ranking
from kdrun.methods.ranking import exact_rank, kendall_tau, soft_rank

# --- references: the straightforward O(B*C^2)-memory versions, and brute force over pairs ---


def naive_kendall(zs, zt, k, teacher_k=None):
    """tau per sample via full [B, C, C] broadcasting, autograd does the backward."""
    a = torch.tanh(k * (zs[:, :, None] - zs[:, None, :]))
    dt = zt[:, :, None] - zt[:, None, :]
    b = dt.sign() if teacher_k is None else torch.tanh(teacher_k * dt)
    C = zs.shape[1]
    return (a * b).sum((1, 2)) / (C * (C - 1))


def naive_soft_rank(z, eps):
    """1 + sum over j != i; the j = i term of the full sum is sigmoid(0) = 1/2."""
    return 0.5 + torch.sigmoid((z[:, :, None] - z[:, None, :]) / eps).sum(2)


def brute_kendall(s, t) -> float:
    """Exact Kendall tau-a of two sequences: ties count 0."""
    n = len(s)
    total = 0
    for i, j in itertools.combinations(range(n), 2):
        ds, dt = s[i] - s[j], t[i] - t[j]
        total += ((ds > 0) - (ds < 0)) * ((dt > 0) - (dt < 0))
    return 2 * total / (n * (n - 1))


def brute_rank(z) -> list[float]:
    """1-based ascending ranks, ties sharing their average rank."""
    return [
        1 + sum(zj < zi for zj in z) + 0.5 * sum(zj == zi for j, zj in enumerate(z) if j != i)
        for i, zi in enumerate(z)
    ]


def brute_spearman(s, t) -> float:
    rs, rt = brute_rank(s), brute_rank(t)
    n = len(rs)
    ms, mt = sum(rs) / n, sum(rt) / n
    cov = sum((a - ms) * (b - mt) for a, b in zip(rs, rt, strict=True))
    var_s = sum((a - ms) ** 2 for a in rs)
    var_t = sum((b - mt) ** 2 for b in rt)
    return cov / (var_s * var_t) ** 0.5


def per_row(fn, zs, zt) -> torch.Tensor:
    return torch.tensor([fn(s.tolist(), t.tolist()) for s, t in zip(zs, zt, strict=True)])


def logits(B, C, seed, dtype=torch.float64, ties=False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: many tied pairs
        return torch.randint(0, 4, (B, C), generator=g).to(dtype)
    return torch.randn(B, C, generator=g, dtype=dtype)


# --- fast path == reference path (values and gradients) ---


@pytest.mark.parametrize("chunk", [1, 3, None])
@pytest.mark.parametrize("teacher_k", [2.0, None])
@pytest.mark.parametrize("ties", [False, True])
def test_kendall_fast_equals_reference(chunk, teacher_k, ties):
    zs = logits(5, 9, 0, ties=ties).requires_grad_()
    zt = logits(5, 9, 1, ties=ties)
    w = torch.randn(5, dtype=torch.float64)
    fast = kendall_tau(zs, zt, 2.0, teacher_k, chunk=chunk)
    ref = naive_kendall(zs, zt, 2.0, teacher_k)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), zs)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), zs)
    torch.testing.assert_close(g_fast, g_ref)


@pytest.mark.parametrize("chunk", [1, 4, None])
@pytest.mark.parametrize("ties", [False, True])
def test_soft_rank_fast_equals_reference(chunk, ties):
    z = logits(4, 11, 2, ties=ties).requires_grad_()
    w = torch.randn(4, 11, dtype=torch.float64)
    fast, ref = soft_rank(z, 0.3, chunk=chunk), naive_soft_rank(z, 0.3)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), z)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), z)
    torch.testing.assert_close(g_fast, g_ref)


@pytest.mark.parametrize("budget", [None, 16 * 200 * 7])
def test_fast_paths_match_reference_at_float32_and_larger_size(budget, monkeypatch):
    """Default blocks (one block here), and a small budget: blocks of growing height."""
    if budget:
        monkeypatch.setitem(ranking.CHUNK_ELEMENTS, "cpu", budget)
        assert len({b.stop - b.start for b in ranking._blocks(torch.zeros(16, 200), None)}) > 3
    zs = logits(16, 200, 3, torch.float32).requires_grad_()
    zt = logits(16, 200, 4, torch.float32)
    fast, ref = kendall_tau(zs, zt, 100.0, 100.0), naive_kendall(zs, zt, 100.0, 100.0)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    g_fast, g_ref = (torch.autograd.grad(t.sum(), zs)[0] for t in (fast, ref))
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-4)
    r_fast, r_ref = soft_rank(zs, 0.1), naive_soft_rank(zs, 0.1)
    torch.testing.assert_close(r_fast, r_ref, atol=1e-3, rtol=1e-5)
    w = torch.randn_like(r_ref)
    g_fast, g_ref = (torch.autograd.grad((r * w).sum(), zs)[0] for r in (r_fast, r_ref))
    torch.testing.assert_close(g_fast, g_ref, atol=1e-3, rtol=1e-4)


def test_gradcheck():
    zs = logits(3, 6, 5).requires_grad_()
    zt = logits(3, 6, 6)
    assert torch.autograd.gradcheck(lambda z: kendall_tau(z, zt, 1.5, 1.5, chunk=2), (zs,))
    assert torch.autograd.gradcheck(lambda z: kendall_tau(z, zt, 1.5, None, chunk=4), (zs,))
    assert torch.autograd.gradcheck(lambda z: soft_rank(z, 0.7, chunk=2), (zs,))


# --- limits: exact Kendall tau and Spearman rho ---


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_converges_to_exact_tau(ties):
    zs, zt = logits(6, 8, 7, ties=ties), logits(6, 8, 8, ties=ties)
    if not ties:  # round to a 1e-2 grid: every nonzero gap is >= 1e-2 (and no ties appear)
        zs, zt = (z.mul(100).round().div(100) for z in (zs, zt))
    exact = per_row(brute_kendall, zs, zt)
    errors = [
        (kendall_tau(zs, zt, k, k).float() - exact).abs().max().item()
        for k in (1.0, 10.0, 100.0, 1e4)
    ]
    assert all(a >= b for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 1e-2 and errors[-1] < 1e-6, errors
    # the sign-on-teacher form converges the same way
    assert (kendall_tau(zs, zt, 1e4, None).float() - exact).abs().max() < 1e-6


def test_exact_rank_matches_brute_force_with_ties():
    z = logits(5, 12, 9, ties=True)
    expected = torch.tensor([brute_rank(row.tolist()) for row in z], dtype=torch.float64)
    torch.testing.assert_close(exact_rank(z), expected)


@pytest.mark.parametrize("ties", [False, True])
def test_soft_rank_limit_is_exact_rank_and_spearman(ties):
    zs, zt = logits(5, 10, 10, ties=ties), logits(5, 10, 11, ties=ties)
    zs, zt = (z.mul(100).round().div(100) for z in (zs, zt))  # gaps >= 1e-2 or exact ties
    torch.testing.assert_close(soft_rank(zs, 1e-4), exact_rank(zs))
    cmkd = create("cmkd", rank_eps=1e-4, zscore=False)
    rho = per_row(brute_spearman, zs, zt)
    torch.testing.assert_close(cmkd.spearman(zs, zt), 1 - rho.to(zs.dtype), atol=1e-6, rtol=0)


def test_soft_rank_is_soft_at_moderate_eps():
    """Guards against a soft rank that silently returns exact ranks (no gradient signal)."""
    z = logits(2, 10, 12).requires_grad_()
    r = soft_rank(z, 0.5)
    assert (r - exact_rank(z)).abs().max() > 1e-2
    assert torch.autograd.grad(r[:, 0].sum(), z)[0].abs().sum() > 0


# --- memory: the point of the chunked path ---

PEAK_SCRIPT = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, "tests")
import test_ranking as T
from kdrun.methods.ranking import kendall_tau, soft_rank

def hwm_kb():
    status = Path("/proc/self/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in status)["VmHWM"].split()[0]

def step(B, C, naive):
    zs, zt = torch.randn(B, C, requires_grad=True), torch.randn(B, C)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = int(hwm_kb())
    if naive:
        loss = T.naive_kendall(zs, zt, 100.0, 100.0).sum() + T.naive_soft_rank(zs, 0.1).sum()
    else:
        loss = kendall_tau(zs, zt, 100.0, 100.0).sum() + soft_rank(zs, 0.1).sum()
    loss.backward()
    return (int(hwm_kb()) - before) / 1024

step(4, 10, False)  # start autograd and OpenMP threads first
print(step(128, 500, False), step(128, 500, True))  # fast first: naive leaves freed memory
"""


def peak_rss_mb() -> tuple[float, float]:
    """Peak-RSS growth (MB) of the fast and the naive path, in a fresh process."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("cannot reset the peak RSS here (needs Linux /proc/self/clear_refs)")
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", PEAK_SCRIPT]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fast, naive = map(float, out.stdout.split()[-2:])
    return fast, naive


def test_chunked_path_uses_a_fraction_of_the_naive_memory():
    """B=128, C=500: the naive broadcast needs ~128 MB per [B, C, C] tensor, several at once."""
    fast, naive = peak_rss_mb()
    assert naive > 400, naive  # the measurement sees the naive tensors
    assert fast < 160 and fast < naive / 3, (fast, naive)
