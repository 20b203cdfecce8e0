"""The spectral preconditioner T(σ; α) (docs/maths.md#preconditioner-modes): T9 (closed forms on
G = diag(3, 1)), T1 (rank-one linear layer, MSE: the Newton step) and the α = 0, 1, 2 reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from workers.curvature.preconditioner import (
    preconditioner_params,
    sigma_star,
    spectral_coefficients,
)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (2.0, (3 / 9.1, 1 / 1.1)),
        (1.0, (3 / 3.1, 1 / 1.1)),
        (0.0, (3 / 1.1, 1 / 1.1)),
    ],
)
def test_t9_table_closed_forms(alpha: float, expected: tuple[float, float]) -> None:
    sigma = np.linalg.svd(np.diag([3.0, 1.0]), compute_uv=False)
    t = spectral_coefficients(sigma, alpha, damping=0.1)
    np.testing.assert_allclose(t, expected, rtol=1e-15)
    printed = {
        2.0: (0.3296703, 0.9090909),
        1.0: (0.9677419, 0.9090909),
        0.0: (2.7272727, 0.9090909),
    }
    np.testing.assert_allclose(t, printed[alpha], atol=5e-8)


def test_t9_alpha2_is_damped_pseudo_inverse() -> None:
    rng = np.random.default_rng(3)
    G = rng.standard_normal((7, 5))
    d = 0.1
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    svd_route = U @ np.diag(spectral_coefficients(s, 2.0, damping=d)) @ Vt
    closed = G @ np.linalg.inv(G.T @ G + d * np.eye(5))
    lam, Q = np.linalg.eigh(G.T @ G)  # eigh route: u_k = G v_k / σ_k
    sig = np.sqrt(lam)
    eigh_route = (G @ Q / sig) @ np.diag(spectral_coefficients(sig, 2.0, damping=d)) @ Q.T
    np.testing.assert_allclose(svd_route, closed, atol=1e-12)
    np.testing.assert_allclose(eigh_route, closed, atol=1e-12)
    # α = 1 with d → 0 gives the polar factor U Vᵀ (Muon); α = 0 gives G/(1 + d).
    muon = U @ np.diag(spectral_coefficients(s, 1.0, damping=1e-12)) @ Vt
    np.testing.assert_allclose(muon, U @ Vt, atol=1e-11)
    sgd = U @ np.diag(spectral_coefficients(s, 0.0, damping=d)) @ Vt
    np.testing.assert_allclose(sgd, G / (1 + d), atol=1e-13)


def test_t1_spectral_newton_numbers() -> None:
    paper = preconditioner_params([15.0], 2.0, 0.0, "paper", damping=0.1)
    assert paper["coefficients"] == [pytest.approx(15 / 225.1, rel=1e-15)]
    assert round(paper["coefficients"][0], 6) == 0.066637
    assert paper["kappa"] == 1.0 and paper["damping"] == 0.1
    # newton mode, κ = h_1/σ_1² = 9/225 = 0.04, d → 0: the exact Newton coefficient σ_1/h_1.
    newton = preconditioner_params([15.0], 2.0, math.log(0.04), "newton", damping=0.0)
    assert newton["kappa"] == pytest.approx(0.04, rel=1e-14)
    assert newton["coefficients"] == [pytest.approx(15 / 9, rel=1e-14)]
    assert spectral_coefficients([15.0], 2.0, kappa=0.04, damping=0.0)[0] == pytest.approx(15 / 9)


def test_newton_mode_damping_formula() -> None:
    sigma = np.array([4.0, 2.5, 1.0, 0.3, 0.07])
    alpha, intercept, d = 1.7, -0.4, 0.1
    p = preconditioner_params(sigma, alpha, intercept, "newton", damping=d)
    kappa = math.exp(intercept)
    lam = d * kappa * float(np.median(sigma)) ** alpha  # median σ = 1.0 here
    assert p["kappa"] == pytest.approx(kappa, rel=1e-15)
    assert p["damping"] == pytest.approx(lam, rel=1e-15)
    assert p["sigma_scale"] == 1.0
    expected = sigma / (kappa * sigma**alpha + lam)
    np.testing.assert_allclose(p["coefficients"], expected, rtol=1e-15)
    # The relative damping makes newton mode invariant to scaling the loss (h and G by c).
    c = 50.0
    scaled = preconditioner_params(
        c * sigma, alpha, intercept + (1 - alpha) * math.log(c), "newton"
    )
    np.testing.assert_allclose(scaled["coefficients"], p["coefficients"], rtol=1e-13)


def test_normalized_mode_is_scale_invariant() -> None:
    sigma = np.array([0.8, 0.31, 0.2, 0.05, 0.011])
    p1 = preconditioner_params(sigma, 2.0, 0.3, "normalized", damping=0.1)
    p10 = preconditioner_params(10.0 * sigma, 2.0, 0.3, "normalized", damping=0.1)
    assert p1["sigma_scale"] == 0.8 and p10["sigma_scale"] == 8.0
    np.testing.assert_allclose(p10["coefficients"], p1["coefficients"], rtol=1e-14)
    st = sigma / 0.8
    np.testing.assert_allclose(p1["coefficients"], st / (st**2 + 0.1), rtol=1e-15)
    # paper mode is not scale invariant
    q1 = preconditioner_params(sigma, 2.0, 0.3, "paper")["coefficients"]
    q10 = preconditioner_params(10.0 * sigma, 2.0, 0.3, "paper")["coefficients"]
    assert not np.allclose(q1, q10)


@pytest.mark.parametrize(
    ("alpha", "d", "kappa"), [(2.0, 0.1, 1.0), (1.5, 0.3, 1.0), (3.0, 0.02, 2.5)]
)
def test_sigma_star_closed_form(alpha: float, d: float, kappa: float) -> None:
    star = sigma_star(alpha, d, kappa)
    assert star.sigma == pytest.approx((d / (kappa * (alpha - 1))) ** (1 / alpha), rel=1e-15)
    t_at = spectral_coefficients([star.sigma], alpha, kappa=kappa, damping=d)[0]
    assert star.t_max == pytest.approx(t_at, rel=1e-13)
    res = optimize.minimize_scalar(
        lambda s: -spectral_coefficients([s], alpha, kappa=kappa, damping=d)[0],
        bounds=(1e-6, 100.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert res.x == pytest.approx(star.sigma, rel=1e-5)
    assert -res.fun == pytest.approx(star.t_max, rel=1e-10)


def test_sigma_star_alpha_2_and_undefined() -> None:
    star = sigma_star(2.0, 0.1)
    assert star.sigma == pytest.approx(math.sqrt(0.1), rel=1e-15)
    assert star.t_max == pytest.approx(1 / (2 * math.sqrt(0.1)), rel=1e-15)
    for a in (1.0, 0.5, 0.0, float("nan")):
        assert all(math.isnan(v) for v in sigma_star(a, 0.1))
    assert all(math.isnan(v) for v in sigma_star(2.0, 0.0))


def test_reductions_table() -> None:
    s = np.array([5.0, 1.0, 0.01])
    np.testing.assert_allclose(spectral_coefficients(s, 0.0, damping=0.1), s / 1.1, rtol=1e-15)
    np.testing.assert_allclose(spectral_coefficients(s, 1.0, damping=1e-14), 1.0, rtol=1e-11)
    np.testing.assert_allclose(spectral_coefficients(s, 2.0, damping=1e-14), 1 / s, rtol=1e-9)
    # α = 1: T increases monotonically towards 1; α < 1: unbounded growth in σ.
    grid = np.logspace(-3, 3, 50)
    assert np.all(np.diff(spectral_coefficients(grid, 1.0)) > 0)
    assert spectral_coefficients([1e6], 0.5)[0] > 900.0


def test_nan_alpha_never_raises() -> None:
    for mode in ("paper", "newton", "normalized"):
        p = preconditioner_params([3.0, 1.0], float("nan"), float("nan"), mode)
        assert p["coefficients"] == [] and math.isnan(p["alpha"])
        assert p["mode"] == mode
    p = preconditioner_params([3.0, 1.0], 2.0, float("nan"), "newton")
    assert p["coefficients"] == []
    p = preconditioner_params([], 2.0, 0.0, "normalized")
    assert p["coefficients"] == []
    with pytest.raises(ValueError):
        preconditioner_params([1.0], 2.0, 0.0, "adam")


def test_sigma_scale_argument() -> None:
    s = np.array([2.0, 0.5])
    np.testing.assert_allclose(
        spectral_coefficients(s, 2.0, damping=0.1, sigma_scale=2.0),
        spectral_coefficients(s / 2.0, 2.0, damping=0.1),
        rtol=1e-15,
    )
