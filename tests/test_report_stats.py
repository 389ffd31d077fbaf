"""The statistics behind report cells: sample std, the exact t quantile, paired intervals."""

from __future__ import annotations

import math

import pytest

from kdrun.report.stats import mean_std, paired, slope, t_quantile, t_two_sided_prob


@pytest.mark.parametrize("df, q975, q995", [  # printed t tables (two-sided 95% / 99%)
    (1, 12.706, 63.657), (2, 4.303, 9.925), (3, 3.182, 5.841), (4, 2.776, 4.604),
    (5, 2.571, 4.032), (10, 2.228, 3.169), (30, 2.042, 2.750), (60, 2.000, 2.660),
    (120, 1.980, 2.617),
])
def test_t_quantile_matches_printed_tables(df: int, q975: float, q995: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(q975, abs=5e-4)
    assert t_quantile(0.99, df) == pytest.approx(q995, abs=5e-4)


def test_t_quantile_tends_to_the_normal() -> None:
    assert t_quantile(0.95, 100_000) == pytest.approx(1.959964, abs=1e-4)
    assert t_two_sided_prob(0.0, 7) == 0.0
    assert t_two_sided_prob(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| < 1) = 1/2


def test_mean_std_uses_n_minus_1() -> None:
    assert mean_std([1.0, 2.0, 6.0]) == (3.0, math.sqrt(7.0), 3)
    m, s, n = mean_std([5.0])
    assert (m, n) == (5.0, 1) and math.isnan(s)
    assert mean_std([float("nan"), 2.0])[2] == 1


def test_paired_interval_by_hand() -> None:
    a = {0: 11.0, 1: 12.0, 2: 11.5, 3: 99.0}  # seed 3 has no partner: left out
    b = {0: 10.0, 1: 10.0, 2: 10.0, 5: 0.0}
    p = paired(a, b)
    assert p.seeds == (0, 1, 2) and p.n == 3
    assert p.mean == pytest.approx(1.5) and p.std == pytest.approx(0.5)
    half = 4.302652729911275 * 0.5 / math.sqrt(3)
    assert (p.lo, p.hi) == (pytest.approx(1.5 - half), pytest.approx(1.5 + half))
    assert p.significant
    one = paired({0: 1.0}, {0: 0.0})
    assert one.n == 1 and math.isnan(one.lo) and not one.significant


def test_slope() -> None:
    assert slope([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(2.0)
    assert math.isnan(slope([1.0, 1.0], [2.0, 3.0]))
