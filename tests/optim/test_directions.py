"""SN matrix functions against closed forms — T1 (rank-one linear layer, MSE: one Newton step),
T9 (T(σ; α) on G = diag(3, 1)), T17 (Muon's NS5 is inexact) — and the three routes against
each other (docs/maths.md#spectral-newton-step)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.curvature.preconditioner import spectral_coefficients
from workers.optim import newton_schulz5, spectral_newton_direction
from workers.optim.directions import gram_singular_values

F64 = torch.float64


def _random(m: int, n: int, rank: int | None = None, seed: int = 0) -> torch.Tensor:
    """A random (m, n) float64 matrix, of the given rank if set."""
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(m, n, generator=gen, dtype=F64)
    a = torch.randn(m, rank, generator=gen, dtype=F64)
    return a @ torch.randn(rank, n, generator=gen, dtype=F64)


def _with_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(σ) Vᵀ with random orthonormal U (m×r), V (n×r)."""
    gen = torch.Generator().manual_seed(seed)
    r = sigma.numel()
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=F64))
    return (u * sigma) @ v.T


def _polar(g: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    return u @ vh


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (2.0, (3 / 9.1, 1 / 1.1)),
        (1.0, (3 / 3.1, 1 / 1.1)),
        (0.0, (3 / 1.1, 1 / 1.1)),
    ],
)
@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
def test_t9_closed_forms(alpha: float, expected: tuple[float, float], method: str) -> None:
    """T9: G = diag(3, 1), d = 0.1 → ΔW = diag(T(3), T(1)) with the tabulated T."""
    g = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))
    out = spectral_newton_direction(g, alpha, 0.1, method=method)  # type: ignore[arg-type]
    assert torch.allclose(out, torch.diag(torch.tensor(expected, dtype=F64)), atol=1e-14)
    assert out[0, 0].item() == pytest.approx(
        {2.0: 0.3296703, 1.0: 0.9677419, 0.0: 2.7272727}[alpha], abs=1e-7
    )


SHAPES = {
    "tall": (12, 5, None),
    "wide": (5, 13, None),
    "square": (9, 9, None),
    "rank_deficient_tall": (14, 9, 4),
    "rank_deficient_wide": (6, 15, 3),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_routes_agree_float64(case: str) -> None:
    """Cholesky (α = 2), Gram-eigh and SVD routes agree to 1e-12 (relative to ‖ΔW‖)."""
    m, n, rank = SHAPES[case]
    g = _random(m, n, rank, seed=len(case))
    for alpha in (0.0, 0.84, 1.0, 1.43, 2.0, 3.0):
        for d, kappa in ((0.1, 1.0), (0.05, 2.5)):
            ref = spectral_newton_direction(g, alpha, d, kappa, method="svd")
            scale = max(1.0, float(ref.norm()))
            methods = ["gram", "auto"] + (["cholesky"] if alpha == 2.0 else [])
            for method in methods:
                out = spectral_newton_direction(g, alpha, d, kappa, method=method)  # type: ignore[arg-type]
                err = float((out - ref).norm()) / scale
                assert err < 1e-12, (case, alpha, d, method, err)


def test_coefficients_match_preconditioner() -> None:
    """Uᵀ ΔW V = diag(spectral_coefficients(σ, α, κ, d)) of workers.curvature.preconditioner."""
    g = _random(10, 7, seed=3)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    for alpha in (0.5, 1.17, 2.0):
        out = spectral_newton_direction(g, alpha, 0.1, 1.7)
        coef = torch.diagonal(u.T @ out @ vh.T).numpy()
        np.testing.assert_allclose(coef, spectral_coefficients(s.numpy(), alpha, 1.7, 0.1), 1e-12)


@pytest.mark.parametrize("shape", [(11, 6), (6, 11), (8, 8)])
def test_alpha_one_tiny_damping_is_polar_factor(shape: tuple[int, int]) -> None:
    """α = 1, d = 1e-12 → U Vᵀ (T = σ/(σ + d) = 1 − O(d/σ))."""
    g = _random(*shape, seed=7)
    out = spectral_newton_direction(g, 1.0, 1e-12)
    assert float((out - _polar(g)).abs().max()) < 1e-10


def test_alpha_zero_is_scaled_gradient() -> None:
    """α = 0 → G/(1 + d), also for a rank-deficient G."""
    for g in (_random(9, 4, seed=1), _random(5, 12, rank=2, seed=2)):
        out = spectral_newton_direction(g, 0.0, 0.1)
        assert float((out - g / 1.1).abs().max()) < 1e-12


def test_t1_newton_and_paper_modes() -> None:
    """T1: G = r xᵀ, σ_1 = 15; κ = 0.04 (= h_1/σ_1²), d → 0 gives −G/9, which solves Wx = y."""
    x = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    y = torch.tensor([3.0, 4.0], dtype=F64)
    w = torch.zeros(2, 3, dtype=F64)
    g = torch.outer(w @ x - y, x)
    assert float(gram_singular_values(g)[0]) == pytest.approx(15.0, rel=1e-12)
    for method in ("auto", "gram", "svd"):
        step = spectral_newton_direction(g, 2.0, 0.0, 0.04, method=method)  # type: ignore[arg-type]
        torch.testing.assert_close(step, g / 9.0, rtol=1e-12, atol=1e-12)
        w_new = w - step
        assert float(0.5 * ((w_new @ x - y) ** 2).sum()) < 1e-24
    paper = spectral_newton_direction(g, 2.0, 0.1)
    # coefficient on u_1 v_1ᵀ: ΔW = T·u_1v_1ᵀ = (T/15)·G
    assert float((paper / g)[0, 0]) * 15.0 == pytest.approx(15 / 225.1, rel=1e-12)
    assert pytest.approx(0.066637, abs=1e-6) == 15 / 225.1


@pytest.mark.parametrize(("power", "lo", "hi"), [(1.0, 0.68, 1.13), (2.0, 0.44, 1.20)])
def test_t17_ns5_is_inexact_sn_alpha_one_is_exact(power: float, lo: float, hi: float) -> None:
    """T17: Muon's NS5 (5 steps) on a 64×32 G with σ ∝ k^−p leaves σ in ≈ [lo, hi], not at 1;
    SN's α = 1 route returns U Vᵀ to 1e-10."""
    sigma = torch.arange(1, 33, dtype=F64) ** -power
    g = _with_spectrum(64, 32, sigma, seed=17)
    g = g / g.norm()
    s_ns = torch.linalg.svdvals(newton_schulz5(g))
    assert abs(float(s_ns.min()) - lo) < 0.02 and abs(float(s_ns.max()) - hi) < 0.02
    assert float((s_ns - 1).abs().max()) > 0.1  # far from the polar factor
    polar = _polar(g)
    for method in ("gram", "svd"):
        out = spectral_newton_direction(g, 1.0, 0.0, method=method)  # type: ignore[arg-type]
        assert float((out - polar).abs().max()) < 1e-10
        assert float((torch.linalg.svdvals(out) - 1).abs().max()) < 1e-10


def test_conv_kernel_shape_and_dtype() -> None:
    """A (C_out, C_in, kh, kw) float32 kernel is treated as C_out × C_in·kh·kw and reshaped back."""
    g = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    out = spectral_newton_direction(g, 1.5, 0.1)
    assert out.shape == g.shape and out.dtype == torch.float32
    ref = spectral_newton_direction(g.double().reshape(6, 27), 1.5, 0.1, method="svd")
    torch.testing.assert_close(out.double().reshape(6, 27), ref, rtol=1e-5, atol=1e-6)


def test_zero_gradient_and_bad_input() -> None:
    """G = 0 gives 0 on every route; vectors, κ ≤ 0 and α ≠ 2 on cholesky are refused."""
    z = torch.zeros(4, 3, dtype=F64)
    for alpha, method in ((2.0, "cholesky"), (1.0, "gram"), (1.0, "svd"), (2.0, "gram")):
        out = spectral_newton_direction(z, alpha, 0.1, method=method)  # type: ignore[arg-type]
        assert torch.equal(out, z)
    with pytest.raises(ValueError):
        spectral_newton_direction(torch.ones(3), 1.0, 0.1)
    with pytest.raises(ValueError):
        spectral_newton_direction(z, 1.0, 0.1, 0.0)
    with pytest.raises(ValueError):
        spectral_newton_direction(z, 1.0, 0.1, method="cholesky")
    with pytest.raises(ValueError):
        spectral_newton_direction(z, math.nan, 0.1)
