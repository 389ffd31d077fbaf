"""The statistics behind report cells: mean ± sample std, and paired t confidence intervals.

scipy is not a dependency, so the Student t quantile is computed here: for integer degrees
of freedom the two-sided probability P(|T| < t) has an exact finite series (Abramowitz &
Stegun 26.7.3-4), which bisection inverts to any precision. No table, no normal
approximation, for every df.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with n-1, n); NaN where undefined (n=0, or std at n=1)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(v) / n
    if n == 1:
        return mean, math.nan, 1
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1)), n


def t_two_sided_prob(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df` >= 1 (exact series)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):  # cos + (2/3)cos^3 + (2*4)/(3*5)cos^5 + ...
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):  # 1 + (1/2)cos^2 + (1*3)/(2*4)cos^4 + ...
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| < t) = level, e.g. `t_quantile(0.95, 4)` = 2.776 (the 97.5% point)."""
    if not 0 < level < 1:
        raise ValueError("level must lie in (0, 1)")
    lo, hi = 0.0, 1.0
    while t_two_sided_prob(hi, df) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_prob(mid, df) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Paired:
    """Mean of per-seed differences `a - b` with its t confidence interval."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float
    seeds: tuple[int, ...]

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)


def paired(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> Paired:
    """Compare two methods over the seeds both finished (a paired t interval on a - b).

    Seeds make the runs comparable (same initialisation and data order), so the difference
    per seed has less noise than the difference of two independent means.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, n = mean_std(diffs)
    if n < 2:
        return Paired(mean, std, n, math.nan, math.nan, seeds)
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return Paired(mean, std, n, mean - half, mean + half, seeds)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of y on x; NaN with fewer than two distinct x."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if len({x for x, _ in pts}) < 2:
        return math.nan
    mx = math.fsum(x for x, _ in pts) / len(pts)
    my = math.fsum(y for _, y in pts) / len(pts)
    sxy = math.fsum((x - mx) * (y - my) for x, y in pts)
    sxx = math.fsum((x - mx) ** 2 for x, _ in pts)
    return sxy / sxx
