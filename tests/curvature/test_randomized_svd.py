"""Randomized block Krylov top-K triplets against the full thin SVD."""

from __future__ import annotations

import pytest
import torch

from workers.curvature.gradient import gradient_svd
from workers.curvature.randomized_svd import top_singular_triplets


def spectrum_matrix(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = sigma.numel()
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return (U * sigma) @ V.T


@pytest.mark.parametrize(("m", "n", "gamma"), [(200, 500, 0.5), (500, 200, 0.8), (250, 250, 0.3)])
def test_top_triplets_match_the_full_svd(m: int, n: int, gamma: float) -> None:
    k = torch.arange(1, min(m, n) + 1, dtype=torch.float64)
    G = spectrum_matrix(m, n, k**-gamma)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    top = top_singular_triplets(G, 20)
    torch.testing.assert_close(top.S[:20], S[:20], rtol=1e-10, atol=0)
    # the same singular vectors, with the pairing u_jᵀ G v_j = σ_j
    overlap_u = (top.U[:, :20] * U[:, :20]).sum(0).abs()
    overlap_v = (top.V[:, :20] * Vh[:20].T).sum(0).abs()
    torch.testing.assert_close(overlap_u, torch.ones(20, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(overlap_v, torch.ones(20, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(((top.U.T @ G) * top.V.T).sum(1), top.S, rtol=1e-12, atol=0)
    count, lower_bound = top.rank_count(1e-6)  # full rank: the count is only a lower bound
    assert count == top.S.numel() and lower_bound == (not top.exact)


def test_low_rank_gradient_is_exact_and_its_rank_is_counted() -> None:
    sigma = torch.logspace(0, -9, 15, dtype=torch.float64)  # 6 above the 1e-6 cut-off, 9 below
    G = spectrum_matrix(300, 400, sigma)
    ref = gradient_svd(G, 20, method="full")
    fast = gradient_svd(G, 20, method="krylov")
    assert fast.rank_num == ref.rank_num == int((sigma > 1e-6).sum())
    assert "rank_lower_bound" not in fast.flags
    torch.testing.assert_close(fast.sigma, ref.sigma, rtol=1e-10, atol=0)
    # paired directions u_k v_kᵀ agree up to a common sign
    for j in range(fast.k):
        d = torch.outer(fast.U[:, j], fast.V[:, j]) - torch.outer(ref.U[:, j], ref.V[:, j])
        assert float(d.norm()) < 1e-8


def test_auto_takes_krylov_on_wide_layers_only() -> None:
    k = torch.arange(1, 513, dtype=torch.float64)
    G = spectrum_matrix(512, 520, k**-0.5)
    auto, full = gradient_svd(G, 20), gradient_svd(G, 20, method="full")
    assert "rank_lower_bound" in auto.flags and "rank_lower_bound" not in full.flags
    torch.testing.assert_close(auto.sigma, full.sigma, rtol=1e-10, atol=0)
    small = spectrum_matrix(100, 300, torch.arange(1, 101, dtype=torch.float64) ** -0.5)
    assert gradient_svd(small, 20).flags == ()
