"""The estimators of docs/maths.md#fit-window-and-exponents and its identity bound on synthetic
data; T1 (rank-one linear layer) and T8 (OLS algebra on random data)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from workers.curvature.fits import (
    MIN_EIGENVALUES,
    bic_compare,
    clusters,
    eigenvalue_exponent,
    fit_exponents,
    ols,
    ols_loglog,
    rank_cutoff_count,
    slope,
)


def _reference_ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """The paper's reference fit (np.polyfit of degree 1 on natural logs)."""
    X, Y = np.log(x), np.log(y)
    b, a = np.polyfit(X, Y, 1)
    e = Y - (a + b * X)
    r2 = 1 - e.var() / Y.var()
    se = np.sqrt(e @ e / (len(X) - 2) / np.sum((X - X.mean()) ** 2))
    return b, a, r2, se


def _random_layer(rng: np.random.Generator, K: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Decreasing σ with a noisy power-law h = c σ^α · noise (all h > 0)."""
    sigma = np.sort(rng.lognormal(-3.0, 1.0, size=K))[::-1]
    alpha = rng.uniform(0.5, 3.0)
    h = 2.0 * sigma**alpha * rng.lognormal(0.0, rng.uniform(0.05, 0.8), size=K)
    return sigma, h


# --- ols_loglog, slope, rank cut-off, clusters -------------------------------------------


def test_ols_loglog_matches_reference() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.lognormal(size=15), rng.lognormal(size=15)
    fit = ols_loglog(x, y)
    assert (fit.slope, fit.intercept, fit.r2, fit.se) == pytest.approx(
        _reference_ols(x, y), rel=1e-14
    )
    assert fit.n == 15


def test_ols_loglog_undefined_cases_are_nan() -> None:
    one = ols_loglog([2.0], [3.0])
    assert one.n == 1 and all(math.isnan(v) for v in (one.slope, one.intercept, one.r2, one.se))
    two = ols_loglog([1.0, 2.0], [1.0, 4.0])
    assert two.slope == pytest.approx(2.0) and two.r2 == 1.0 and math.isnan(two.se)
    flat = ols_loglog([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(flat.slope) and math.isnan(flat.r2)
    dropped = ols_loglog([1.0, 2.0, -1.0, 4.0], [1.0, 4.0, 5.0, 16.0])  # x ≤ 0 dropped
    assert dropped.n == 3 and dropped.slope == pytest.approx(2.0, rel=1e-14)
    assert ols_loglog([], []).n == 0


def test_slope() -> None:
    assert slope([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx(2.0, rel=1e-15)
    assert math.isnan(slope([1.0], [1.0]))
    assert math.isnan(slope([1.0, 1.0], [1.0, 2.0]))
    assert math.isnan(slope([1.0, float("nan")], [1.0, 2.0]))
    rng = np.random.default_rng(1)
    x, u, v = rng.standard_normal((3, 30))
    assert slope(x, u + v) == pytest.approx(slope(x, u) + slope(x, v), abs=1e-13)  # linearity


def test_rank_cutoff_count() -> None:
    sigma = [1.0, 0.3, 1e-5, 2e-6, 1e-6, 5e-7, 0.0]
    assert rank_cutoff_count(sigma) == 4
    assert rank_cutoff_count(sigma, tau=1e-3) == 2
    assert rank_cutoff_count([]) == 0
    assert rank_cutoff_count([0.0, 0.0]) == 0


def test_clusters() -> None:
    sigma = [1.0, 0.9999, 0.99985, 0.5, 0.3, 0.29995, 0.1]
    assert clusters(sigma) == [[0, 1, 2], [3], [4, 5], [6]]
    assert clusters(sigma, rel_gap=1e-5) == [[0], [1], [2], [3], [4], [5], [6]]
    assert clusters([]) == []


def test_bic_compare_on_exact_models() -> None:
    k = np.arange(1, 21, dtype=np.float64)
    res = bic_compare(3.0 * k**-1.3)
    assert res["power_law"]["gamma"] == pytest.approx(1.3, rel=1e-12)
    assert res["power_law"]["log_c"] == pytest.approx(math.log(3.0), rel=1e-12)
    assert res["power_law"]["rss"] < 1e-25
    rng = np.random.default_rng(2)
    noisy = np.exp(-0.2 * k + 0.01 * rng.standard_normal(20))
    res = bic_compare(noisy)
    assert res["exponential"]["beta"] == pytest.approx(0.2, rel=1e-2)
    assert res["exponential"]["bic"] < res["power_law"]["bic"]
    r = res["lognormal"]
    assert r["bic"] == pytest.approx(20 * math.log(r["rss"] / 20) + 3 * math.log(20), rel=1e-15)
    assert r["aic"] == pytest.approx(20 * math.log(r["rss"] / 20) + 6, rel=1e-15)
    assert not bic_compare([1.0, 0.5])["lognormal"]["valid"]


# --- fit_exponents: exact cases, flags, undefined cases -----------------------------------


def test_exact_power_laws_recover_exponents() -> None:
    k = np.arange(1, 21, dtype=np.float64)
    sigma = 0.7 * k**-0.8
    h = 1.9 * sigma**2.5
    f = fit_exponents(sigma, h, eigenvalues=k**-1.7, bootstrap=0)
    assert f.alpha == pytest.approx(2.5, abs=1e-12)
    assert f.alpha_intercept == pytest.approx(math.log(1.9), abs=1e-12)
    assert f.gamma == pytest.approx(0.8, abs=1e-12)
    assert f.s == pytest.approx(2.0, abs=1e-12) and f.s_unsorted == pytest.approx(2.0, abs=1e-12)
    assert f.s_eig == pytest.approx(1.7, abs=1e-12) and f.r2_s_eig == pytest.approx(1.0)
    assert f.predicted_s == pytest.approx(2.0, abs=1e-12)
    assert f.triangle_relative_error < 1e-12 and f.triangle_bound < 1e-6
    assert f.r2_alpha == pytest.approx(1.0) and f.alpha_theilsen == pytest.approx(2.5, abs=1e-9)
    assert f.alpha_excl_k1 == pytest.approx(2.5, abs=1e-12)
    assert f.n_valid == 20 and f.n_neg == 0 and f.flags == ()
    assert math.isnan(f.alpha_ci_boot[0])  # bootstrap=0 disables the bootstrap


def test_t1_single_point_is_nan_with_flag() -> None:
    f = fit_exponents([15.0], [9.0])
    assert math.isnan(f.alpha) and math.isnan(f.gamma) and math.isnan(f.predicted_s)
    assert math.isnan(f.triangle_relative_error) and math.isnan(f.alpha_se)
    assert "few_points" in f.flags and f.n_valid == 1 and f.fit_mask == (True,)


def test_all_h_nonpositive() -> None:
    sigma = np.arange(12, 0, -1, dtype=np.float64)
    f = fit_exponents(sigma, -np.ones(12))
    assert math.isnan(f.alpha) and math.isnan(f.s) and f.n_valid == 0 and f.n_neg == 12
    assert {"all_h_nonpositive", "few_points", "nonconvex_block"} <= set(f.flags)
    assert f.gamma == pytest.approx(-slope(np.log(np.arange(1, 13)), np.log(sigma)), rel=1e-13)
    assert not any(f.fit_mask)


def test_few_points_still_gives_gamma() -> None:
    sigma = np.array([1.0, 0.5, 0.25, 0.2, 0.1])
    f = fit_exponents(sigma, sigma**2)
    assert "few_points" in f.flags and math.isnan(f.alpha) and math.isnan(f.s)
    assert math.isfinite(f.gamma)
    g = fit_exponents(sigma, sigma**2, min_points=3)
    assert g.alpha == pytest.approx(2.0, abs=1e-12) and "few_points" not in g.flags


def test_negative_h_excluded_never_abs() -> None:
    rng = np.random.default_rng(4)
    sigma, h = _random_layer(rng)
    h_neg = h.copy()
    h_neg[[4, 11]] = -h[[4, 11]]
    f = fit_exponents(sigma, h_neg, bootstrap=0)
    keep = np.ones(20, dtype=bool)
    keep[[4, 11]] = False
    assert f.alpha == pytest.approx(ols_loglog(sigma[keep], h[keep]).slope, rel=1e-14)
    assert f.n_neg == 2 and f.n_valid == 18 and f.fit_mask == tuple(keep)
    assert f.alpha != pytest.approx(fit_exponents(sigma, h, bootstrap=0).alpha, rel=1e-6)
    assert "nonconvex_block" not in f.flags  # 2/20 = 0.1 ≤ 0.2
    h_many = h.copy()
    h_many[:5] = 0.0
    assert "nonconvex_block" in fit_exponents(sigma, h_many, bootstrap=0).flags  # 5/20 > 0.2


def test_h_floor_and_rank_cutoff() -> None:
    rng = np.random.default_rng(5)
    sigma, h = _random_layer(rng)
    floor = float(np.sort(h)[3])
    f = fit_exponents(sigma, h, h_floor=floor, bootstrap=0)
    assert f.n_valid == 16 and f.alpha == pytest.approx(
        ols_loglog(sigma[h > floor], h[h > floor]).slope
    )
    sigma2 = sigma.copy()
    sigma2[-1] = sigma[0] * 1e-9  # junk σ below the cut-off
    f_all = fit_exponents(sigma2, h, bootstrap=0)
    f_cut = fit_exponents(sigma2, h, rank_cutoff=1e-6, bootstrap=0)
    assert f_cut.n_window == 19 and f_cut.n_valid == 19 and not f_cut.fit_mask[-1]
    k = np.arange(1, 20, dtype=np.float64)
    assert f_cut.gamma == pytest.approx(-ols_loglog(k, sigma[:19]).slope, rel=1e-13)
    assert f_all.gamma > f_cut.gamma + 0.3
    # the cut-off is strict (σ_k > τσ_1) and exactly at τ, not at a multiple of it
    sigma3 = sigma.copy()
    sigma3[-2], sigma3[-1] = 2e-6 * sigma[0], 1e-6 * sigma[0]
    f3 = fit_exponents(sigma3, h, rank_cutoff=1e-6, bootstrap=0)
    assert f3.n_window == 19 and f3.fit_mask[-2] and not f3.fit_mask[-1]
    assert rank_cutoff_count([1.0, 1e-6, 1.0000001e-6]) == 2


def test_clustered_sigma_flag_and_merged_alpha() -> None:
    k = np.arange(1, 21, dtype=np.float64)
    sigma = k**-1.0
    sigma[6] = sigma[5] * (1 - 1e-4)
    h = sigma**2
    h[5], h[6] = 1.3 * h[5], 0.7 * h[6]  # arbitrary split inside the cluster
    f = fit_exponents(sigma, h, bootstrap=0)
    assert "clustered_sigma" in f.flags and f.n_clusters == 19
    pts_s = np.r_[sigma[:5], sigma[5:7].mean(), sigma[7:]]
    pts_h = np.r_[h[:5], h[5:7].mean(), h[7:]]
    assert f.alpha_merged == pytest.approx(ols_loglog(pts_s, pts_h).slope, rel=1e-14)
    assert "clustered_sigma" not in fit_exponents(k**-1.0, k**-2.0, bootstrap=0).flags


def test_theilsen_flag_and_intervals() -> None:
    rng = np.random.default_rng(6)
    sigma, h = _random_layer(rng)
    f = fit_exponents(sigma, h, bootstrap=500, seed=3)
    g = fit_exponents(sigma, h, bootstrap=500, seed=3)
    assert f.alpha_ci_boot == g.alpha_ci_boot  # deterministic in the seed
    assert f.alpha_ci_boot != fit_exponents(sigma, h, bootstrap=500, seed=4).alpha_ci_boot
    assert f.alpha_ci_t[0] < f.alpha < f.alpha_ci_t[1]
    assert f.alpha_ci_boot[0] < f.alpha < f.alpha_ci_boot[1]
    h_out = sigma**2
    h_out[0] *= 1e6  # a huge k = 1 outlier drags OLS, not Theil–Sen
    f_out = fit_exponents(sigma, h_out, bootstrap=0)
    assert "theilsen_disagrees" in f_out.flags
    assert f_out.alpha_theilsen == pytest.approx(2.0, abs=1e-9)
    assert f_out.alpha_excl_k1 == pytest.approx(2.0, abs=1e-12)


def test_bootstrap_skips_degenerate_resamples() -> None:
    # With 3 points, 1/9 of the resamples repeat one point (var x = 0): they must be skipped.
    sigma, h = np.array([1.0, 0.5, 0.2]), np.array([1.0, 0.3, 0.03])
    f = fit_exponents(sigma, h, min_points=3, bootstrap=300, seed=1)
    lo, hi = f.alpha_ci_boot
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= f.alpha <= hi
    assert math.isfinite(f.alpha_se) and f.alpha_ci_t[0] < f.alpha < f.alpha_ci_t[1]


def test_non_finite_inputs_are_excluded_without_warnings() -> None:
    k = np.arange(1, 13, dtype=np.float64)
    sigma, h = k**-1.0, k**-2.0
    sigma[3], h[7], h[9] = np.nan, np.inf, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = fit_exponents(sigma, h, bootstrap=50)
        empty = fit_exponents([], [])
    assert f.n_window == 11 and f.n_valid == 9 and f.alpha == pytest.approx(2.0, abs=1e-12)
    assert f.gamma == pytest.approx(1.0, abs=1e-12)
    assert "sigma_not_sorted" not in f.flags
    assert empty.n_valid == 0 and math.isnan(empty.gamma) and "few_points" in empty.flags


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        fit_exponents([1.0, 2.0], [1.0])


# --- T8: OLS algebra on random data (the identity bound, the α decomposition) ----------------


def test_t8_alpha_is_two_plus_phi_slope() -> None:
    rng = np.random.default_rng(8)
    for _ in range(100):
        sigma, h = _random_layer(rng, K=int(rng.integers(8, 40)))
        f = fit_exponents(sigma, h, bootstrap=0)
        phi = slope(np.log(sigma), np.log(h / sigma**2))
        assert f.alpha == pytest.approx(2.0 + phi, abs=1e-12)


def test_t8_identity_and_bound() -> None:
    rng = np.random.default_rng(9)
    n_gaps = 0
    for trial in range(160):
        K = int(rng.integers(8, 30))
        sigma, h = _random_layer(rng, K)
        if trial % 2:  # make gaps in F
            h[rng.choice(K, size=int(rng.integers(1, 3)), replace=False)] *= -1.0
        f = fit_exponents(sigma, h, bootstrap=0, min_points=5)
        F = np.array(f.fit_mask)
        n_gaps += int(not F.all())
        x = np.log(np.arange(1, K + 1))[F]
        z, y = np.log(sigma[F]), np.log(h[F])
        e = y - (f.alpha_intercept + f.alpha * z)
        cov_ex = float(np.mean((e - e.mean()) * (x - x.mean())))
        diff = f.s_unsorted - f.alpha * f.gamma_on_fit_set
        assert diff == pytest.approx(-cov_ex / float(x.var()), abs=1e-11)
        assert abs(diff) / abs(f.s_unsorted) <= f.triangle_bound * (1 + 1e-12)
        assert f.triangle_relative_error_unsorted == pytest.approx(abs(diff) / abs(f.s_unsorted))
        abs_bound = math.sqrt(y.var() / x.var() * (1 - f.r2_alpha) * (1 - f.r2_gamma_on_fit_set))
        assert abs(diff) <= abs_bound * (1 + 1e-12)
    assert n_gaps == 80


def test_t8_sorting_steepens_without_gaps() -> None:
    rng = np.random.default_rng(10)
    for _ in range(100):
        sigma, h = _random_layer(rng, K=int(rng.integers(8, 30)))
        f = fit_exponents(sigma, h, bootstrap=0)
        assert all(f.fit_mask)
        assert f.s >= f.s_unsorted - 1e-12
        if np.all(np.diff(h) < 0):
            assert f.s == pytest.approx(f.s_unsorted, abs=1e-12)


def test_ols_is_the_closed_form_and_agrees_with_polyfit() -> None:
    x = np.array([0.0, 1.0, 3.0, 4.0])
    exact = ols(x, 2.0 - 0.5 * x)
    assert (exact.slope, exact.intercept, exact.r2, exact.se, exact.n) == (-0.5, 2.0, 1.0, 0.0, 4)
    rng = np.random.default_rng(5)
    for _ in range(20):
        X, Y = rng.normal(size=12), rng.normal(size=12)
        b, a = np.polyfit(X, Y, 1)
        fit = ols(X, Y)
        assert fit.slope == pytest.approx(b, rel=1e-12, abs=1e-15)
        assert fit.intercept == pytest.approx(a, rel=1e-12, abs=1e-15)
    for X, Y in (([1.0], [2.0]), ([1.0, 1.0], [1.0, 2.0]), ([1.0, math.nan], [1.0, 2.0])):
        assert math.isnan(ols(X, Y).slope)
    with pytest.raises(ValueError, match="differ in length"):
        ols([1.0, 2.0], [1.0])


@pytest.mark.parametrize("s", [0.5, 1.0, 1.81, 3.0])
def test_s_eig_of_an_exact_power_law_is_its_exponent(s: float) -> None:
    lam = 2.5 * np.arange(1, 16, dtype=float) ** -s
    fit = eigenvalue_exponent(lam)
    assert -fit.slope == pytest.approx(s, abs=1e-12) and fit.r2 == pytest.approx(1.0)
    assert fit.intercept == pytest.approx(math.log(2.5), abs=1e-12) and fit.n == 15
    shuffled = np.random.default_rng(0).permutation(lam)
    assert -eigenvalue_exponent(shuffled).slope == pytest.approx(s, abs=1e-12)  # ranks by value


@pytest.mark.parametrize("s", [0.7, 1.81])
def test_s_eig_keeps_each_value_at_its_rank_in_the_whole_spectrum(s: float) -> None:
    """Unconverged Ritz values (here perturbed, as they are before convergence) leave the fit
    but keep their ranks, so λ_k = c k^−s still gives s exactly; re-ranking the survivors
    1..n, the other convention, would not."""
    k = np.arange(1, 21, dtype=float)
    lam = 3.0 * k**-s
    converged = np.ones(20, bool)
    converged[[1, 4, 5, 11]] = False
    ritz = np.where(converged, lam, lam * 0.97)
    with_negative = np.append(ritz, -0.1)  # a negative Ritz value ranks last, never fitted
    fit = eigenvalue_exponent(with_negative, np.append(converged, True))
    assert -fit.slope == pytest.approx(s, abs=1e-12) and fit.n == 16
    reranked = ols(np.log(np.arange(1, 17.0)), np.log(lam[converged]))
    assert abs(-reranked.slope - s) > 1e-3  # off by ~1%: ranks that moved
    stored = fit_exponents(
        k**-1.0, k**-2.0, eigenvalues=with_negative, converged=np.append(converged, True)
    )
    assert stored.s_eig == pytest.approx(s, abs=1e-12) and stored.r2_s_eig == pytest.approx(1.0)


def test_s_eig_edge_cases() -> None:
    assert math.isnan(eigenvalue_exponent([1.0]).slope)
    assert math.isnan(eigenvalue_exponent([1.0, -1.0, 0.5, 0.2, 0.1]).slope)  # 4 positive
    five = np.arange(1, 6, dtype=float) ** -2.0
    assert -eigenvalue_exponent(five).slope == pytest.approx(2.0, abs=1e-12)
    assert eigenvalue_exponent(five, [True] * 4 + [False]).n == 4  # too few converged
    with pytest.raises(ValueError, match="converged must match"):
        eigenvalue_exponent(five, [True])


@pytest.mark.parametrize("n", [0, 2, 4, 5, 9])
def test_s_eig_needs_five_converged_eigenvalues(n: int) -> None:
    k = np.arange(1, 21, dtype=float)
    sigma, h = k**-1.0, k**-2.0
    lam = 3.0 * np.arange(1, n + 1, dtype=float) ** -1.81
    fit = fit_exponents(sigma, h, eigenvalues=lam)
    if n < MIN_EIGENVALUES:
        assert math.isnan(fit.s_eig) and "few_eigenvalues" in fit.flags
    else:
        assert fit.s_eig == pytest.approx(1.81, abs=1e-12)
        assert "few_eigenvalues" not in fit.flags
    assert "few_eigenvalues" not in fit_exponents(sigma, h).flags  # no Lanczos: no flag


def test_profile_s_eig_is_null_below_five_converged_values() -> None:
    import torch

    from tests.curvature.models import MLP
    from workers.curvature import profile_model

    torch.manual_seed(0)
    model = MLP((5, 7, 3), "tanh")
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    few = profile_model(model, x, y, top_k=8, lanczos_steps=3, layers="net.0").layers[0]
    assert few.lanczos is not None and few.lanczos.n_converged <= 3
    assert few.s_eig is None and "few_eigenvalues" in few.flags
    many = profile_model(model, x, y, top_k=8, lanczos_steps=35, layers="net.0").layers[0]
    assert many.lanczos is not None and many.lanczos.n_converged >= 5
    assert many.s_eig is not None and "few_eigenvalues" not in many.flags
