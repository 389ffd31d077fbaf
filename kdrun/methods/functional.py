"""Loss building blocks shared by several methods (all per-sample unless said).

Kept as plain functions so the tests can check the identities the methods rely on
(DKD's and CAKD's decomposition of KL, DIST's Pearson terms) directly.
"""

from __future__ import annotations

import torch


def standardize(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization (Sun et al. 2024): `(z - mean) / (std + eps)` per sample.

    `std` is torch's default (Bessel-corrected), as in the authors' code.
    """
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of `[N, D]` inputs, written as DIST's code writes it
    (cosine of the centred rows with `eps` added to the norm product)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def split_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, strong: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decompose `KL(pt || ps)` over a split of the classes into a strong set S and weak set W.

    `strong` is a `[B, C]` bool mask; both sets must be non-empty in every row (the callers
    ensure it: DKD's label, CAKD's 1 <= top_k <= C-1). Returns the
    per-sample `(binary, strong_kl, weak_kl, pt_S, pt_W)` with the exact identity

        KL(pt || ps) = binary + pt_S * strong_kl + pt_W * weak_kl,

    `binary = KL([pt_S, pt_W] || [ps_S, ps_W])` and `strong_kl`/`weak_kl` the KL between the
    distributions renormalized inside S / W. With S = {label} this is DKD (TCKD = binary,
    NCKD = weak_kl, strong_kl = 0); with any S it is CAKD's BCD/SCD/WCD. Everything is
    computed in log space and masked before exponentiating, so sets of size one and extreme
    logits give no NaN (values or gradients).
    """
    weak = ~strong  # (not checked here: that would cost a GPU sync per step)
    ls, lt = student_logits / T, teacher_logits / T

    def set_lse(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return z.masked_fill(~mask, float("-inf")).logsumexp(1)

    lse_s, lse_t = ls.logsumexp(1), lt.logsumexp(1)
    s_S, s_W = set_lse(ls, strong), set_lse(ls, weak)
    t_S, t_W = set_lse(lt, strong), set_lse(lt, weak)

    log_bs = torch.stack([s_S - lse_s, s_W - lse_s], 1)
    log_bt = torch.stack([t_S - lse_t, t_W - lse_t], 1)
    bt = log_bt.exp()
    binary = (bt * (log_bt - log_bs)).sum(1)

    def inside_kl(mask: torch.Tensor, s_set: torch.Tensor, t_set: torch.Tensor) -> torch.Tensor:
        # Outside the set, both log-probabilities are set to 0 *before* exp (unmasked values
        # can overflow): those entries then add exp(0) * (0 - 0) = 0, with zero gradient.
        log_q = torch.where(mask, ls - s_set[:, None], 0.0)
        log_p = torch.where(mask, lt - t_set[:, None], 0.0)
        return (log_p.exp() * (log_p - log_q)).sum(1)

    strong_kl, weak_kl = inside_kl(strong, s_S, t_S), inside_kl(weak, s_W, t_W)
    return binary, strong_kl, weak_kl, bt[:, 0], bt[:, 1]
