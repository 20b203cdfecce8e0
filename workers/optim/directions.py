"""Matrix functions of Spectral Newton (docs/optimizer.md): the update direction for one matrix.

For a gradient (or momentum) G = U Σ Vᵀ the SN direction is

    ΔW = Σ_k T(σ_k) u_k v_kᵀ,   T(σ; α) = σ / (κ σ^α + d),

T being the coefficient on u_k v_kᵀ (the paper's convention, docs/optimizer.md):
α = 0 gives G/(κ + d) (SGD), α = 1 with d → 0 gives U Vᵀ (Muon's exact polar factor) and
α = 2 gives the damped pseudo-inverse (1/κ)·G(GᵀG + (d/κ)I)⁻¹.

Routes, all computed in float64 and cast back to G's dtype:

* ``cholesky``: the α = 2 closed form on the smaller side (falls back to ``gram`` when d ≤ 0
  or the factorisation fails).
* ``gram``: eigh of the smaller Gram matrix. For m ≥ n, GᵀG = VΛVᵀ, σ = √max(Λ, 0) and
  ΔW = G·V diag(1/(κσ^α + d)) Vᵀ; for m < n, GGᵀ = UΛUᵀ and ΔW = U diag(…) Uᵀ·G.
* ``svd``: the reference, U diag(T(σ)) Vᵀ from ``torch.linalg.svd``.
* ``auto``: ``cholesky`` if α == 2 else ``gram``.

Directions with σ ≤ τ·σ_1 (τ = max(m, n)·√ε₆₄ ≈ 1.5e-8·max(m, n), the resolution of σ from a
float64 Gram matrix) get coefficient 0 in the ``gram`` and ``svd`` routes (the pseudo-inverse
convention); with d > 0 this changes ΔW by at most Σ σ_k/d over those k, which is 0 for an
exactly rank-deficient G.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = [
    "METHODS",
    "Method",
    "gram_singular_values",
    "newton_schulz5",
    "spectral_newton_direction",
]

Method = Literal["auto", "cholesky", "gram", "svd"]
METHODS: tuple[Method, ...] = ("auto", "cholesky", "gram", "svd")
_EPS64_SQRT = math.sqrt(torch.finfo(torch.float64).eps)
NS5_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Muon's quintic Newton–Schulz coefficients (a, b, c)."""


def _as_matrix(g: torch.Tensor) -> torch.Tensor:
    """View a parameter-shaped tensor as (out, in·…): conv kernels become C_out × C_in·kh·kw."""
    if g.ndim < 2:
        raise ValueError(f"SN needs a matrix (ndim ≥ 2), got shape {tuple(g.shape)}")
    return g.reshape(g.shape[0], -1)


def _cutoff(sigma: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """τ·σ_1 with τ = max(m, n)·√ε₆₄: below it σ from a float64 Gram matrix is noise."""
    top = sigma.max() if sigma.numel() else sigma.new_zeros(())
    return top * (max(m.shape) * _EPS64_SQRT)


def _inverse_curvature(
    sigma: torch.Tensor, alpha: float, damping: float, kappa: float, cut: torch.Tensor
) -> torch.Tensor:
    """f(σ) = 1/(κσ^α + d) for σ > cut, else 0; T(σ) = σ·f(σ)."""
    denom = kappa * sigma.pow(alpha) + damping
    keep = (sigma > cut) & (denom > 0)
    return torch.where(keep, 1.0 / torch.where(keep, denom, torch.ones_like(denom)), 0.0)


def gram_singular_values(g: torch.Tensor) -> torch.Tensor:
    """σ(G) descending, in float64, from eigvalsh of the smaller Gram matrix: σ = √max(Λ, 0)."""
    m = _as_matrix(g).to(torch.float64)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    lam = torch.linalg.eigvalsh(gram)
    return lam.clamp_min(0.0).sqrt().flip(0)


def _gram_route(m: torch.Tensor, alpha: float, damping: float, kappa: float) -> torch.Tensor:
    """ΔW = G·V f(Σ) Vᵀ (m ≥ n) or U f(Σ) Uᵀ·G (m < n), from eigh of the smaller Gram."""
    tall = m.shape[0] >= m.shape[1]
    gram = m.T @ m if tall else m @ m.T
    lam, basis = torch.linalg.eigh(gram)
    sigma = lam.clamp_min(0.0).sqrt()
    f = _inverse_curvature(sigma, alpha, damping, kappa, _cutoff(sigma, m))
    inner = (basis * f) @ basis.T
    return m @ inner if tall else inner @ m


def _svd_route(m: torch.Tensor, alpha: float, damping: float, kappa: float) -> torch.Tensor:
    """ΔW = U diag(σ·f(σ)) Vᵀ from the thin SVD (the reference)."""
    u, sigma, vh = torch.linalg.svd(m, full_matrices=False)
    f = _inverse_curvature(sigma, alpha, damping, kappa, _cutoff(sigma, m))
    return (u * (sigma * f)) @ vh


def _cholesky_route(m: torch.Tensor, damping: float, kappa: float) -> torch.Tensor | None:
    """α = 2: ΔW = (1/κ)·G(GᵀG + (d/κ)I)⁻¹ (m ≥ n) or (1/κ)(GGᵀ + (d/κ)I)⁻¹G; None if the
    Cholesky factorisation fails or d ≤ 0."""
    if not damping > 0.0:
        return None
    tall = m.shape[0] >= m.shape[1]
    gram = m.T @ m if tall else m @ m.T
    gram.diagonal().add_(damping / kappa)
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return None
    if tall:
        return torch.cholesky_solve(m.T, chol).T / kappa
    return torch.cholesky_solve(m, chol) / kappa


def spectral_newton_direction(
    G: torch.Tensor,
    alpha: float,
    damping: float,
    kappa: float = 1.0,
    *,
    method: Method = "auto",
) -> torch.Tensor:
    """ΔW = Σ_k σ_k/(κσ_k^α + d) · u_k v_kᵀ for one matrix, shaped and typed like ``G``.

    ``G`` of ndim > 2 (a conv kernel) is viewed as (shape[0], rest) and the result reshaped
    back. ``method`` picks the route (module docstring); ``auto`` = cholesky iff α == 2.
    Raises ValueError for ndim < 2, κ ≤ 0, d < 0, non-finite α or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if not (math.isfinite(alpha) and math.isfinite(damping) and math.isfinite(kappa)):
        raise ValueError(f"alpha, damping, kappa must be finite: {alpha}, {damping}, {kappa}")
    if kappa <= 0.0 or damping < 0.0:
        raise ValueError(f"need kappa > 0 and damping ≥ 0, got kappa={kappa}, damping={damping}")
    m = _as_matrix(G).to(torch.float64)
    if method == "auto":
        method = "cholesky" if alpha == 2.0 else "gram"
    out: torch.Tensor | None = None
    if method == "cholesky":
        if alpha != 2.0:
            raise ValueError(f"the cholesky route is the α = 2 closed form, got alpha={alpha}")
        out = _cholesky_route(m, damping, kappa)
    if out is None and method in ("cholesky", "gram"):
        out = _gram_route(m, alpha, damping, kappa)
    if out is None:
        out = _svd_route(m, alpha, damping, kappa)
    return out.reshape(G.shape).to(G.dtype)


def newton_schulz5(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Muon's quintic Newton–Schulz iteration, an *approximate* polar factor of G (float64).

    X₀ = G/(‖G‖_F + eps); X ← aX + (bA + cA²)X with A = XXᵀ and (a, b, c) = (3.4445, −4.7750,
    2.0315). Five steps leave the singular values in ≈ [0.68, 1.13] rather than at 1
    (docs/optimizer.md); kept as the reference for what SN's α = 1 route computes exactly.
    """
    a, b, c = NS5_COEFFICIENTS
    x = _as_matrix(G).to(torch.float64)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.linalg.matrix_norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.reshape(G.shape).to(G.dtype)
