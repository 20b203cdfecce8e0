"""Participation ratio and zeta predictions (docs/maths.md#participation-ratio); T7: PR of
closed-form power laws k^−s."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from workers.curvature import participation
from workers.curvature.participation import (
    finite_zeta_prediction,
    harmonic,
    participation_ratio,
    zeta_prediction,
)


def _printed(value: float, printed: str) -> bool:
    """True iff ``value`` rounds to the decimal string ``printed`` (to its printed digits)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(value - float(printed)) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


def test_k_minus_2_infinite_k_is_2_5() -> None:
    assert zeta_prediction(2.0) == pytest.approx(2.5, rel=1e-14)


@pytest.mark.parametrize(("K", "printed"), [(20, "2.354036"), (5, "1.982833"), (100, "2.469847")])
def test_k_minus_2_finite_k(K: int, printed: str) -> None:
    k = np.arange(1, K + 1, dtype=np.float64)
    direct = participation_ratio(k**-2.0)
    assert _printed(direct, printed)
    assert finite_zeta_prediction(2.0, K) == pytest.approx(direct, rel=1e-13)


@pytest.mark.parametrize(("s", "printed"), [(3.0, "1.420308"), (1.5, "5.677356")])
def test_zeta_prediction_table(s: float, printed: str) -> None:
    assert _printed(zeta_prediction(s), printed)


def test_s4_is_seven_sixths() -> None:
    assert zeta_prediction(4.0) == pytest.approx(7.0 / 6.0, rel=1e-14)


@pytest.mark.parametrize(
    ("K", "printed"), [(20, "8.109"), (100, "16.458"), (10_000, "58.241"), (1_000_000, "125.933")]
)
def test_s1_finite_k(K: int, printed: str) -> None:
    assert _printed(finite_zeta_prediction(1.0, K), printed)


def test_finite_k_converges_to_zeta_for_s_gt_1() -> None:
    for s in (1.5, 2.0, 3.0):
        assert finite_zeta_prediction(s, 1_000_000) == pytest.approx(zeta_prediction(s), rel=5e-3)
        assert finite_zeta_prediction(s, 50) < zeta_prediction(s)


def test_harmonic_matches_hurwitz_zeta() -> None:
    for s in (1.5, 2.0, 4.0):
        expected = float(special.zeta(s)) - float(special.zeta(s, 3_000_001))
        assert harmonic(s, 3_000_000) == pytest.approx(expected, rel=1e-13)
    assert harmonic(1.0, 4) == pytest.approx(1 + 1 / 2 + 1 / 3 + 1 / 4, rel=1e-15)


def test_pr_strictly_increasing_in_k_for_decreasing_sequences() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        K = int(rng.integers(2, 60))
        x = np.sort(rng.lognormal(0.0, float(rng.uniform(0.1, 3.0)), size=K))[::-1]
        x = x * (1 - 1e-9 * np.arange(K))  # strictly decreasing
        prs = [participation_ratio(x[:j]) for j in range(1, K + 1)]
        assert prs[0] == pytest.approx(1.0, rel=1e-15)
        assert np.all(np.diff(prs) > 0)
        assert prs[-1] <= K * (1 + 1e-12)


def test_zeta_prediction_undefined_at_s_le_1(monkeypatch: pytest.MonkeyPatch) -> None:
    original = special.zeta

    def guarded(s: float, *args: float) -> float:
        if s <= 1:
            raise AssertionError("scipy zeta evaluated at s <= 1")
        return float(original(s, *args))

    monkeypatch.setattr(participation.special, "zeta", guarded)
    for s in (0.5, 1.0, 0.0, -2.0, float("nan")):
        assert math.isnan(zeta_prediction(s))
    assert zeta_prediction(2.0) == pytest.approx(2.5)


def test_finite_prediction_defined_for_every_s() -> None:
    for s in (-1.0, 0.0, 0.5, 1.0):
        v = finite_zeta_prediction(s, 100)
        assert math.isfinite(v) and 1.0 <= v <= 100.0
    assert finite_zeta_prediction(0.0, 37) == pytest.approx(37.0, rel=1e-15)
    assert math.isnan(finite_zeta_prediction(2.0, 0))


def test_pr_edge_cases() -> None:
    assert math.isnan(participation_ratio([]))
    assert math.isnan(participation_ratio([0.0, 0.0]))
    assert math.isnan(participation_ratio([1.0, float("nan")]))
    assert participation_ratio([3.0]) == 1.0
    assert participation_ratio([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0, rel=1e-15)
    assert participation_ratio([5.0, 0.0, 0.0]) == 1.0
    assert math.isnan(participation_ratio([1.0, float("inf")]))
    assert math.isnan(participation_ratio([1e308, 1e308]))


def test_pr_sums_are_exactly_rounded() -> None:
    """The sums are exact before one rounding, so the result does not depend on the order
    (or SIMD width) of the summation: a tiny value after a huge one still counts."""
    x = [1e16, 1.0, 1.0, -1e16 + 2.0]
    total = math.fsum(x)
    squares = math.fsum(v * v for v in x)
    assert participation_ratio(x) == total**2 / squares
    assert participation_ratio(x[::-1]) == participation_ratio(x)
