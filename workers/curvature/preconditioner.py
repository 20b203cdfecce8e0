"""Spectral preconditioner T(σ; α) of Spectral Newton (docs/engine.md).

With h_k = κσ_k^α on span{u_k v_kᵀ} and damping λ, the damped Newton step is
Δ = −Σ_k T_k u_k v_kᵀ with T_k = σ_k / (κσ_k^α + λ). T is the coefficient on u_k v_kᵀ
(the paper's convention): α = 0 → SGD, α = 1 → Muon (UVᵀ), α = 2 → damped pseudo-inverse.

Modes (an engineering choice; docs/maths.md#preconditioner-modes):

* ``paper``: raw σ, κ = 1, λ = d.
* ``newton``: κ = ĉ = exp(intercept of the α fit), λ = d·κ·median(σ)^α, raw σ. Then
  T = σ/(κ(σ^α + d·median(σ)^α)): the damping is relative to the median curvature.
* ``normalized``: σ̃ = σ/σ_1 (σ_1 = largest σ), κ = 1, λ = d, and the returned coefficient
  is T(σ̃) itself, the coefficient on u_k v_kᵀ in σ̃ units (not multiplied back by σ_1): it is
  invariant to rescaling G, and the overall scale is left to the learning rate.
"""

from __future__ import annotations

import math
from typing import NamedTuple, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from api_schemas.enums import PRECONDITIONER_MODES, PreconditionerMode

__all__ = [
    "MODES",
    "Mode",
    "PreconditionerDict",
    "SigmaStar",
    "preconditioner_params",
    "sigma_star",
    "spectral_coefficients",
]

Mode = PreconditionerMode
MODES = PRECONDITIONER_MODES


class PreconditionerDict(TypedDict):
    """Result of :func:`preconditioner_params` (matches api_schemas PreconditionerParams)."""

    mode: Mode
    alpha: float
    kappa: float
    damping: float
    sigma_scale: float
    coefficients: list[float]


def spectral_coefficients(
    sigma: ArrayLike,
    alpha: float,
    kappa: float = 1.0,
    damping: float = 0.1,
    sigma_scale: float = 1.0,
) -> NDArray[np.float64]:
    """T_k = σ̃_k / (κ σ̃_k^α + d) with σ̃ = σ / sigma_scale (coefficient on u_k v_kᵀ, in σ̃ units).

    NaN inputs propagate to NaN coefficients; nothing raises.
    """
    st = np.asarray(sigma, dtype=np.float64).ravel() / float(sigma_scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(st / (kappa * st**alpha + damping), dtype=np.float64)


class SigmaStar(NamedTuple):
    """Maximiser σ* of T(σ) = σ/(κσ^α + d) and the maximum T(σ*)."""

    sigma: float
    t_max: float


def sigma_star(alpha: float, damping: float = 0.1, kappa: float = 1.0) -> SigmaStar:
    """σ* = (d/(κ(α−1)))^{1/α}, T(σ*) = σ*(α−1)/(dα), for α > 1, d > 0, κ > 0.

    From dT/dσ = 0 ⇔ κ(α−1)σ^α = d. For α = 1 T rises monotonically to 1/κ and for α < 1 it
    is unbounded, so (NaN, NaN) is returned there (and for d ≤ 0 or κ ≤ 0).
    """
    if not (alpha > 1.0 and damping > 0.0 and kappa > 0.0):
        return SigmaStar(math.nan, math.nan)
    s = (damping / (kappa * (alpha - 1.0))) ** (1.0 / alpha)
    return SigmaStar(s, s * (alpha - 1.0) / (damping * alpha))


def preconditioner_params(
    sigma: ArrayLike,
    alpha: float,
    alpha_intercept: float,
    mode: str,
    damping: float = 0.1,
) -> PreconditionerDict:
    """Parameters and coefficients T_k at the measured σ for one layer.

    Returns {mode, alpha, kappa, damping, sigma_scale, coefficients}, where ``damping`` is the
    λ actually used, so ``spectral_coefficients(σ, alpha, kappa, damping, sigma_scale)``
    reproduces ``coefficients`` (in newton mode λ = d·κ·median(σ)^α). The caller passes the σ
    above the rank cut-off. NaN α (or NaN κ/scale) → alpha NaN and empty coefficients.
    Raises ValueError only for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    s = np.asarray(sigma, dtype=np.float64).ravel()
    kappa, lam, scale = 1.0, float(damping), 1.0
    if mode == "newton":
        kappa = math.exp(alpha_intercept) if math.isfinite(alpha_intercept) else math.nan
        med = float(np.median(s)) if s.size else math.nan
        lam = damping * kappa * med**alpha if math.isfinite(alpha) else math.nan
    elif mode == "normalized":
        scale = float(np.max(s)) if s.size and np.isfinite(s).all() else math.nan
    out: PreconditionerDict = {
        "mode": mode,
        "alpha": float(alpha) if math.isfinite(alpha) else math.nan,
        "kappa": kappa,
        "damping": lam,
        "sigma_scale": scale,
        "coefficients": [],
    }
    if all(math.isfinite(v) for v in (alpha, kappa, lam, scale)) and scale > 0:
        out["coefficients"] = [float(t) for t in spectral_coefficients(s, alpha, kappa, lam, scale)]
    return out
