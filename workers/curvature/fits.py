"""Log-log fits of the curvature exponents α, γ, s (docs/engine.md).

Conventions reproduce the paper's frozen JSON to ~1e-15 (docs/engine.md):

* α = slope(log h_k ~ log σ_k) over F = {k : h_k > h_floor, σ_k > 0 (and above the cut-off)},
* γ = −slope(log σ_k ~ log k) over the σ window (all given σ_k > 0, or σ_k > τσ_1),
* s (= s_dir) = −slope(log h_(j) ~ log j), h sorted descending over F, j = 1..|F|,
* s_eig = −slope(log λ_j ~ log j) over the converged positive Ritz values, j the value's
  rank among all the Ritz values (``eigenvalue_exponent``),
* triangle_relative_error = |s − αγ| / |s|.

Every slope is the one OLS, :func:`ols` (docs/engine.md, "Conventions"). Everything undefined
is NaN; no function here raises on degenerate data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ExponentFit",
    "LogLogFit",
    "bic_compare",
    "clusters",
    "eigenvalue_exponent",
    "fit_exponents",
    "ols",
    "ols_loglog",
    "rank_cutoff_count",
    "slope",
]

FloatArray = NDArray[np.float64]
NAN = float("nan")
MIN_EIGENVALUES = 5  # s_eig is fitted from at least this many converged eigenvalues
NAN_PAIR: tuple[float, float] = (NAN, NAN)


@dataclass(frozen=True)
class LogLogFit:
    """OLS fit Y = intercept + slope·X on log data, with R² and the slope's standard error."""

    slope: float
    intercept: float
    r2: float
    se: float
    n: int


def _slopes(X: FloatArray, Y: FloatArray) -> FloatArray:
    """b = Σ(X−X̄)(Y−Ȳ) / Σ(X−X̄)² along the last axis (one fit, or one per row)."""
    xc = X - X.mean(axis=-1, keepdims=True)
    yc = Y - Y.mean(axis=-1, keepdims=True)
    return np.asarray(np.sum(xc * yc, axis=-1) / np.sum(xc * xc, axis=-1), dtype=np.float64)


def ols(X: ArrayLike, Y: ArrayLike) -> LogLogFit:
    """The OLS fit Y = a + bX (X, Y already logged where a log-log fit is meant).

    b = Σ(X−X̄)(Y−Ȳ) / Σ(X−X̄)², a = Ȳ − bX̄, R² = 1 − var(e)/var(Y) with e = Y − a − bX
    (NaN when var(Y) = 0), SE(b) = √(eᵀe/(n−2) / Σ(X−X̄)²) (NaN when n < 3). Every field but
    ``n`` is NaN when n < 2 or var(X) = 0, and NaN propagates (no masking here).
    """
    Xa = np.asarray(X, dtype=np.float64).ravel()
    Ya = np.asarray(Y, dtype=np.float64).ravel()
    n = int(Xa.size)
    if Ya.size != n:
        raise ValueError(f"X and Y differ in length: {n} != {Ya.size}")
    if n < 2 or not np.ptp(Xa) > 0.0:
        return LogLogFit(NAN, NAN, NAN, NAN, n)
    b = float(_slopes(Xa, Ya))
    a = float(Ya.mean()) - b * float(Xa.mean())
    e = Ya - (a + b * Xa)
    var_y = float(Ya.var())
    r2 = 1.0 - float(e.var()) / var_y if var_y > 0.0 else NAN
    sxx = float(np.sum((Xa - Xa.mean()) ** 2))
    se = math.sqrt(float(e @ e) / (n - 2) / sxx) if n >= 3 else NAN
    return LogLogFit(b, a, r2, se, n)


def ols_loglog(x: ArrayLike, y: ArrayLike) -> LogLogFit:
    """OLS of log y on log x (natural logs): slope b, intercept a, R² = 1 − var(e)/var(Y),
    SE = √(eᵀe/(n−2)/Σ(X−X̄)²).

    Pairs where x or y is non-finite or ≤ 0 are dropped (their log is undefined); ``n``
    counts the pairs used. NaN fields when n < 2 or var(X) = 0; SE NaN when n < 3.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)
    return ols(np.log(xa[ok]), np.log(ya[ok]))


def slope(x: ArrayLike, y: ArrayLike) -> float:
    """The :func:`ols` slope of y on x; NaN if the lengths differ, n < 2, var(x) = 0 or any
    value is non-finite (no silent masking, so slopes on one index set stay additive)."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size or not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        return NAN
    return ols(xa, ya).slope


def eigenvalue_exponent(eigenvalues: ArrayLike, converged: ArrayLike | None = None) -> LogLogFit:
    """s_eig as the fit log λ_j = c − s_eig·log j: returns the :func:`ols` fit (slope −s_eig).

    The convention (docs/engine.md, "Conventions"): the values are sorted descending with
    their ``converged`` flags (all converged when None) and j is a value's rank among *all*
    of them; only the converged, finite, positive values enter the fit, each with that rank.
    By Poincaré separation (Cauchy interlacing) the j-th Ritz value is at most the j-th
    eigenvalue, so a converged value of rank j has at least j eigenvalues at or above it:
    re-ranking after dropping an unconverged value above it would understate its index. Fewer than
    ``MIN_EIGENVALUES`` fitted values: a NaN fit (a slope through two or three Ritz values
    is not an exponent); ``n`` counts the values fitted.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    ok = np.ones(lam.shape, bool) if converged is None else np.asarray(converged, bool).ravel()
    if ok.shape != lam.shape:
        raise ValueError("converged must match eigenvalues in shape")
    order = np.argsort(-lam, kind="stable")
    lam, ok = lam[order], ok[order]
    rank = np.arange(1, lam.size + 1, dtype=np.float64)
    sel = ok & np.isfinite(lam) & (lam > 0)
    if int(sel.sum()) < MIN_EIGENVALUES:
        return LogLogFit(NAN, NAN, NAN, NAN, int(sel.sum()))
    return ols(np.log(rank[sel]), np.log(lam[sel]))


def rank_cutoff_count(sigma: ArrayLike, tau: float = 1e-6) -> int:
    """Numerical rank r_num = #{k : σ_k > τ·σ_1}, σ_1 = max of the finite σ
    (docs/maths.md#rank-cut-off)."""
    s = np.asarray(sigma, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0 or s.max() <= 0.0:
        return 0
    return int(np.count_nonzero(s > tau * s.max()))


def clusters(sigma: ArrayLike, rel_gap: float = 1e-3) -> list[list[int]]:
    """Partition indices 0..K−1 into runs of consecutive σ with relative gap
    |σ_k − σ_{k+1}| / max(|σ_k|, |σ_{k+1}|) < rel_gap
    (docs/maths.md#near-degenerate-singular-values). Singletons are included;
    non-finite σ are always singletons."""
    s = np.asarray(sigma, dtype=np.float64).ravel()
    out: list[list[int]] = []
    for i in range(s.size):
        if out and i > 0 and np.isfinite(s[i]) and np.isfinite(s[i - 1]):
            scale = max(abs(s[i]), abs(s[i - 1]))
            if scale > 0 and abs(s[i] - s[i - 1]) < rel_gap * scale:
                out[-1].append(i)
                continue
            if scale == 0:
                out[-1].append(i)
                continue
        out.append([i])
    return out


def _bic_on(k: FloatArray, log_s: FloatArray) -> dict[str, dict[str, float]]:
    """BIC/AIC of three models of log σ_k on the ranks k
    (docs/maths.md#model-choice-for-the-singular-values); see :func:`bic_compare`."""
    n = int(k.size)
    x = np.log(k)
    designs = {
        "power_law": (np.column_stack([np.ones(n), x]), 2),
        "exponential": (np.column_stack([np.ones(n), k]), 2),
        "lognormal": (np.column_stack([np.ones(n), x, x * x]), 3),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (X, p) in designs.items():
        rank = int(np.linalg.matrix_rank(X)) if n > 0 else 0
        if n <= p or rank < p:
            out[name] = {"valid": False, "n": n, "rss": NAN, "bic": NAN, "aic": NAN}
            continue
        c = np.linalg.lstsq(X, log_s, rcond=None)[0]  # least squares in 2-3 unknowns
        rss = float(np.sum((log_s - X @ c) ** 2))
        with np.errstate(divide="ignore"):
            ll = n * math.log(rss / n) if rss > 0 else -math.inf
        rec: dict[str, float] = {"valid": True, "n": n, "rss": rss, "log_c": float(c[0])}
        rec["bic"] = ll + p * math.log(n)
        rec["aic"] = ll + 2 * p
        if name == "power_law":
            rec["gamma"] = -float(c[1])
        elif name == "exponential":
            rec["beta"] = -float(c[1])
        else:
            # The paper's JSON names np.polyfit's order: a = (log k)² coefficient, b = log k.
            rec["a"], rec["b"] = float(c[2]), float(c[1])
            rec["coef_log_k"], rec["coef_log_k_sq"] = float(c[1]), float(c[2])
        out[name] = rec
    return out


def bic_compare(sigma: ArrayLike) -> dict[str, dict[str, float]]:
    """Compare models of log σ_k over ranks k = 1..K (finite σ_k > 0 kept with their rank):
    power law c − γ log k (p=2), exponential c − βk (p=2), log-normal-in-rank
    c + b log k + a (log k)² (p=3). BIC = K ln(RSS/K) + p ln K, AIC = K ln(RSS/K) + 2p.
    Each entry holds bic, aic, rss, n, valid, log_c and the model's coefficients."""
    s = np.asarray(sigma, dtype=np.float64).ravel()
    k = np.arange(1, s.size + 1, dtype=np.float64)
    ok = np.isfinite(s) & (s > 0)
    return _bic_on(k[ok], np.log(s[ok]))


@dataclass(frozen=True)
class ExponentFit:
    """All exponent estimates for one layer (docs/engine.md)."""

    alpha: float
    alpha_intercept: float
    r2_alpha: float
    alpha_se: float
    alpha_ci_t: tuple[float, float]
    alpha_ci_boot: tuple[float, float]
    alpha_theilsen: float
    alpha_excl_k1: float
    alpha_merged: float
    gamma: float
    r2_gamma: float
    gamma_on_fit_set: float
    r2_gamma_on_fit_set: float
    s: float
    r2_s: float
    s_unsorted: float
    r2_s_unsorted: float
    s_eig: float
    r2_s_eig: float
    predicted_s: float
    triangle_error: float
    triangle_relative_error: float
    triangle_relative_error_unsorted: float
    triangle_relative_error_eig: float
    triangle_bound: float
    n_window: int
    n_valid: int
    n_neg: int
    n_clusters: int
    fit_mask: tuple[bool, ...]
    bic: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


def _t_ci(fit: LogLogFit) -> tuple[float, float]:
    """α ± t_{0.975, n−2}·SE."""
    from scipy import stats  # lazy: scipy.stats takes seconds to import

    if fit.n < 3 or not math.isfinite(fit.se):
        return NAN_PAIR
    half = float(stats.t.ppf(0.975, fit.n - 2)) * fit.se
    return (fit.slope - half, fit.slope + half)


def _boot_ci(X: FloatArray, Y: FloatArray, draws: int, seed: int) -> tuple[float, float]:
    """Pairs-bootstrap 2.5/97.5 percentiles of the OLS slope; degenerate resamples skipped."""
    n = X.size
    if draws <= 0 or n < 3:
        return NAN_PAIR
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    Xb, Yb = X[idx], Y[idx]
    ok = np.ptp(Xb, axis=1) > 0
    if np.count_nonzero(ok) < 2:
        return NAN_PAIR
    lo, hi = np.percentile(_slopes(Xb[ok], Yb[ok]), [2.5, 97.5])
    return (float(lo), float(hi))


def _rel(num: float, den: float) -> float:
    """|num| / |den|, NaN when undefined."""
    if not (math.isfinite(num) and math.isfinite(den)) or den == 0.0:
        return NAN
    return abs(num) / abs(den)


@np.errstate(divide="ignore", invalid="ignore")
def fit_exponents(
    sigma: ArrayLike,
    h: ArrayLike,
    *,
    eigenvalues: ArrayLike | None = None,
    converged: ArrayLike | None = None,
    h_floor: float = 0.0,
    rank_cutoff: float | None = None,
    min_points: int = 8,
    bootstrap: int = 2000,
    seed: int = 0,
) -> ExponentFit:
    """Fit α, γ, s (and diagnostics) from σ_k, h_k in rank order k = 1..K (docs/engine.md).

    Window W = {k : σ_k finite, > 0, and σ_k > τσ_1 if ``rank_cutoff`` = τ}; γ is fitted on W.
    F = {k ∈ W : h_k > max(h_floor, 0)}; α, s, s_unsorted, γ_F are fitted on F and are NaN
    (flag ``few_points``) when |F| < ``min_points``. Never fits on |h|. ``eigenvalues`` are
    the converged ones: s_eig is NaN (flag ``few_eigenvalues``) with fewer than
    ``MIN_EIGENVALUES`` positive (:func:`eigenvalue_exponent`, with ``converged`` its flags:
    give all the Ritz values, so that ranks count the unconverged ones too). Raises only if
    σ and h (or the eigenvalues and their flags) differ in length.
    """
    sig = np.asarray(sigma, dtype=np.float64).ravel()
    hh = np.asarray(h, dtype=np.float64).ravel()
    if sig.shape != hh.shape:
        raise ValueError(f"sigma and h differ in length: {sig.size} != {hh.size}")
    k = np.arange(1, sig.size + 1, dtype=np.float64)
    window = np.isfinite(sig) & (sig > 0)
    if rank_cutoff is not None and window.any():
        window &= sig > rank_cutoff * sig[window].max()
    fin_h = np.isfinite(hh)
    F = window & fin_h & (hh > max(h_floor, 0.0))
    n_neg = int(np.count_nonzero(window & fin_h & (hh <= 0)))
    K, nF = int(window.sum()), int(F.sum())
    flags: list[str] = []
    if K > 0 and n_neg / K > 0.2:
        flags.append("nonconvex_block")
    if K > 0 and not np.any(hh[window & fin_h] > 0):
        flags.append("all_h_nonpositive")
    if np.any(np.diff(sig[window]) > 0):
        flags.append("sigma_not_sorted")

    log_k, log_s = np.log(k), np.log(np.where(window, sig, 1.0))
    g = ols(log_k[window], log_s[window])
    gamma = -g.slope

    groups = [[int(np.flatnonzero(window)[i]) for i in c] for c in clusters(sig[window])]
    if any(len(c) >= 2 for c in groups):
        flags.append("clustered_sigma")

    nan_f = LogLogFit(NAN, NAN, NAN, NAN, nF)
    a = s_dir = s_uns = g_F = nan_f
    ci_t = ci_b = NAN_PAIR
    a_ts = a_x1 = a_m = NAN
    if nF < min_points:
        flags.append("few_points")
    else:
        X, Y = log_s[F], np.log(hh[F])
        a = ols(X, Y)
        ci_t = _t_ci(a)
        ci_b = _boot_ci(X, Y, bootstrap, seed)
        if a.n >= 2 and np.ptp(X) > 0:
            from scipy import stats

            a_ts = float(stats.theilslopes(Y, X)[0])
            if abs(a.slope - a_ts) > 0.2:
                flags.append("theilsen_disagrees")
        F1 = F.copy()
        F1[:1] = False
        a_x1 = ols(log_s[F1], np.log(hh[F1])).slope
        a_m = _merged_alpha(sig, hh, groups, max(h_floor, 0.0), min_points)
        j = np.arange(1, nF + 1, dtype=np.float64)
        s_dir = ols(np.log(j), np.sort(Y)[::-1])
        s_uns = ols(log_k[F], Y)
        g_F = ols(log_k[F], X)

    alpha, s, s_u, gamma_F = a.slope, -s_dir.slope, -s_uns.slope, -g_F.slope
    pred = alpha * gamma
    s_e = LogLogFit(NAN, NAN, NAN, NAN, 0)
    if eigenvalues is not None:
        s_e = eigenvalue_exponent(eigenvalues, converged)
        if s_e.n < MIN_EIGENVALUES:
            flags.append("few_eigenvalues")
    s_eig = -s_e.slope
    bound = math.sqrt((1 - a.r2) * (1 - g_F.r2) / s_uns.r2) if s_uns.r2 > 0 else NAN
    return ExponentFit(
        alpha=alpha,
        alpha_intercept=a.intercept,
        r2_alpha=a.r2,
        alpha_se=a.se,
        alpha_ci_t=ci_t,
        alpha_ci_boot=ci_b,
        alpha_theilsen=a_ts,
        alpha_excl_k1=a_x1,
        alpha_merged=a_m,
        gamma=gamma,
        r2_gamma=g.r2,
        gamma_on_fit_set=gamma_F,
        r2_gamma_on_fit_set=g_F.r2,
        s=s,
        r2_s=s_dir.r2,
        s_unsorted=s_u,
        r2_s_unsorted=s_uns.r2,
        s_eig=s_eig,
        r2_s_eig=s_e.r2,
        predicted_s=pred,
        triangle_error=abs(s - pred),
        triangle_relative_error=_rel(s - pred, s),
        triangle_relative_error_unsorted=_rel(s_u - alpha * gamma_F, s_u),
        triangle_relative_error_eig=_rel(s_eig - pred, s_eig),
        triangle_bound=bound,
        n_window=K,
        n_valid=nF,
        n_neg=n_neg,
        n_clusters=len(groups),
        fit_mask=tuple(bool(b) for b in F),
        bic=_bic_on(k[window], log_s[window]),
        flags=tuple(flags),
    )


def _merged_alpha(
    sig: FloatArray, hh: FloatArray, groups: Sequence[Sequence[int]], floor: float, min_points: int
) -> float:
    """α with each σ-cluster merged to one point (mean σ, mean of its finite h; the cluster
    mean of h is basis-invariant, docs/maths.md#near-degenerate-singular-values); points with
    mean h ≤ floor dropped."""
    pts = []
    for c in groups:
        hc = hh[list(c)]
        hc = hc[np.isfinite(hc)]
        if hc.size and hc.mean() > floor:
            pts.append((float(sig[list(c)].mean()), float(hc.mean())))
    if len(pts) < min_points:
        return NAN
    arr = np.log(np.asarray(pts))
    return ols(arr[:, 0], arr[:, 1]).slope
