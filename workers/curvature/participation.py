"""Participation ratio and its zeta-function predictions (docs/engine.md).

PR(x) = (Σ x_k)² / Σ x_k². For x_k = C k^{−s} the top-K value is H_K(s)²/H_K(2s) with
H_K(s) = Σ_{k≤K} k^{−s}; for s > 1 it increases to ζ(s)²/ζ(2s) as K → ∞.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = ["finite_zeta_prediction", "harmonic", "participation_ratio", "zeta_prediction"]

_CHUNK = 1 << 20


def participation_ratio(x: ArrayLike) -> float:
    """PR(x) = (Σ x_k)² / Σ x_k² over exactly the values given.

    The caller passes the valid values (e.g. the top-K h_k > 0, or σ above the rank cut-off);
    nothing is filtered here, so a non-finite entry gives NaN. NaN for an empty input or
    Σ x² = 0. For non-negative x, 1 ≤ PR ≤ #nonzero entries.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        return float("nan")
    # Exactly rounded sums: the same bits on every CPU, whatever BLAS kernel it dispatches.
    try:
        ss = math.fsum((a * a).tolist())
        total = math.fsum(a.tolist())
    except OverflowError:
        return float("nan")
    if not math.isfinite(ss) or ss == 0.0:
        return float("nan")
    return total**2 / ss


def harmonic(s: float, K: int) -> float:
    """Generalised harmonic number H_K(s) = Σ_{k=1}^{K} k^{−s} (direct sum, chunked)."""
    total = 0.0
    # Sum from the tail upward (smallest terms first) in chunks to bound memory.
    for hi in range(int(K), 0, -_CHUNK):
        lo = max(hi - _CHUNK, 0)
        k = np.arange(hi, lo, -1, dtype=np.float64)
        total += float(np.sum(k ** (-float(s))))
    return total


def zeta_prediction(s: float) -> float:
    """ζ(s)²/ζ(2s), the K → ∞ PR of x_k ∝ k^{−s}, for s > 1; NaN for s ≤ 1 or NaN s.

    The PR diverges for s ≤ 1; scipy's ζ there is the analytic continuation, so it is never
    evaluated (use :func:`finite_zeta_prediction`).
    """
    if not s > 1.0:
        return float("nan")
    return float(special.zeta(s)) ** 2 / float(special.zeta(2.0 * s))


def finite_zeta_prediction(s: float, K: int) -> float:
    """H_K(s)²/H_K(2s): PR of x_k = k^{−s}, k = 1..K; defined for every real s and K ≥ 1
    (NaN for K < 1 or non-finite s)."""
    if int(K) < 1 or not math.isfinite(s):
        return float("nan")
    return harmonic(s, K) ** 2 / harmonic(2.0 * s, K)
