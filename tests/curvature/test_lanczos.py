"""Tests for workers.curvature.lanczos (docs/maths.md#lanczos-and-the-breakdown-test; T6 a
known power-law spectrum, T14 multiplicities, T15 s_eig against s_dir); all float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from numpy.typing import ArrayLike

from workers.curvature.fits import eigenvalue_exponent
from workers.curvature.lanczos import (
    block_lanczos,
    lanczos,
    lanczos_top,
)

F64 = torch.float64


def _exponent(values: ArrayLike, converged: ArrayLike | None = None) -> tuple[float, float]:
    """(s_eig, R²) of the one s_eig convention (``fits.eigenvalue_exponent``)."""
    fit = eigenvalue_exponent(values, converged)
    return -fit.slope, fit.r2


def _orthogonal(n: int, seed: int, cols: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, cols or n, generator=g, dtype=F64)).Q


def _random_symmetric(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=F64)
    return (a + a.T) / 2


def _kron_diag(s: torch.Tensor, a: torch.Tensor):  # X ↦ S X A with S, A diagonal
    m, n = s.numel(), a.numel()

    def mv(v: torch.Tensor) -> torch.Tensor:
        return (s[:, None] * v.reshape(m, n) * a[None, :]).reshape(-1)

    return mv


# ---------------------------------------------------------------- T6: power law k^-1.7
@pytest.fixture(scope="module")
def power_law_op():
    n = 1500
    q = _orthogonal(n, seed=1)
    lam = torch.arange(1, n + 1, dtype=F64) ** -1.7
    return (lambda v: q @ (lam * (q.T @ v))), n, lam.numpy()


def test_t6_power_law_60_steps_exact(power_law_op):
    mv, n, lam = power_law_op
    r = lanczos(mv, n, steps=60, k=20, tol=1e-8, seed=0)
    rel = np.abs(r.eigenvalues - lam[:20]) / lam[:20]
    assert rel.max() < 1e-10
    assert r.n_converged == 20 and r.converged.all()
    assert r.steps == 60 and r.n_matvec == 60 and r.restarts == 0
    assert np.all(np.diff(r.eigenvalues) < 0)
    s_eig, r2 = _exponent(r.eigenvalues, r.converged)
    assert s_eig == pytest.approx(1.7, abs=1e-6)
    assert r2 == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_t6_power_law_40_steps_unconverged_and_honest(power_law_op, seed):
    mv, n, lam = power_law_op
    r = lanczos(mv, n, steps=40, k=20, tol=1e-8, seed=seed)
    assert 14 <= r.n_converged < 20  # 40 steps leave about 3 unconverged
    rel = np.abs(r.eigenvalues - lam[:20]) / lam[:20]
    assert rel[r.converged].max() < 1e-6  # every flagged value is really converged
    assert r.converged[:10].all()  # the top converges first


def test_t6_lanczos_top_reaches_convergence(power_law_op):
    mv, n, lam = power_law_op
    r = lanczos_top(mv, n, k=20, tol=1e-8, seed=0, return_vectors=True)
    assert r.n_converged == 20
    # checked after every matvec: the first Krylov size with all 20 converged, not more
    # (40 steps leave ~3 unconverged)
    assert r.n_matvec == r.steps and 40 < r.steps <= 60
    assert lanczos(mv, n, steps=r.steps - 1, k=20, tol=1e-8, seed=0).n_converged < 20
    assert np.abs(r.eigenvalues - lam[:20]).max() / lam[0] < 1e-12
    y = r.ritz_vectors
    assert y is not None and y.shape == (n, 20) and y.dtype == F64
    assert torch.allclose(y.T @ y, torch.eye(20, dtype=F64), atol=1e-10)
    hy = torch.stack([mv(y[:, i]) for i in range(3)], 1)
    assert torch.allclose(hy, y[:, :3] * torch.from_numpy(r.eigenvalues[:3]), atol=1e-10)


def test_lanczos_top_grows_one_basis(power_law_op):
    mv, n, _ = power_law_op
    r = lanczos_top(mv, n, k=20, tol=1e-8, m0=20, m_max=300, step=None)  # 20 → 30 → 45
    # n_matvec = 45, not 20 + 30 + 45: the basis was extended, not rebuilt
    assert r.n_converged == 20 and r.steps == 45 and r.n_matvec == 45
    one_shot = lanczos(mv, n, steps=45, k=20)
    np.testing.assert_array_equal(r.eigenvalues, one_shot.eigenvalues)
    capped = lanczos_top(mv, n, k=20, tol=1e-8, m0=20, m_max=30, step=None)
    assert capped.steps == 30 and capped.n_converged < 20


def test_t6_kronecker_distinct_values():
    """X ↦ S X A, spectra i^-1, j^-1 (m = n = 20): top distinct values found once each."""
    d = torch.arange(1, 21, dtype=F64) ** -1
    mv = _kron_diag(d, d)
    exact = np.unique(np.outer(d.numpy(), d.numpy()))
    for seed in range(3):
        r = lanczos(mv, 400, steps=25, k=10, seed=seed)
        conv = r.eigenvalues[r.converged]
        for v in (1.0, 0.5, 1 / 3, 0.25, 0.2):
            assert np.sum(np.abs(conv - v) <= 1e-8 * v) == 1
        # converged values are true eigenvalues
        assert np.min(np.abs(conv[:, None] - exact[None, :]), axis=1).max() < 1e-12


# ---------------------------------------------------------------- T14: multiplicities
@pytest.fixture(scope="module")
def t14_op():
    lam = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, -0.25], dtype=F64)
    q = _orthogonal(6, seed=3)
    c = q @ torch.diag(lam) @ q.T

    def mv(v: torch.Tensor) -> torch.Tensor:  # H[X] = X C, X is 4 × 6
        return (v.reshape(4, 6) @ c).reshape(-1)

    def mv_block(x: torch.Tensor) -> torch.Tensor:  # (24, b) -> (24, b)
        b = x.shape[1]
        return (x.T.reshape(b, 4, 6) @ c).reshape(b, 24).T

    return mv, mv_block, lam.numpy()


def test_t14_single_vector_breakdown(t14_op):
    mv, _, lam = t14_op
    r = lanczos(mv, 24, steps=24, k=6)
    # invariant Krylov subspace of dimension 6: breakdown after 6 matvecs, no restart
    assert r.steps == 6 and r.n_matvec == 6 and r.restarts == 0
    np.testing.assert_allclose(r.eigenvalues, lam, atol=1e-12)
    assert r.converged.all() and r.residuals.max() < 1e-12
    assert lanczos_top(mv, 24, k=6).steps == 6


def test_t14_single_vector_restarts_recover_multiplicity(t14_op):
    mv, _, lam = t14_op
    r = lanczos(mv, 24, steps=24, k=24)  # k > 6: restart on each breakdown
    assert r.steps == 24 and r.restarts == 3
    np.testing.assert_allclose(r.eigenvalues, np.repeat(lam, 4), atol=1e-12)


def test_t14_block_lanczos_multiplicity(t14_op):
    _, mv_block, lam = t14_op
    r = block_lanczos(mv_block, 24, block_size=4, steps=10, k=24, tol=1e-8, seed=0)
    assert r.steps == 24 and r.n_matvec == 24 and r.restarts == 0
    np.testing.assert_allclose(r.eigenvalues, np.repeat(lam, 4), atol=1e-12)
    assert r.n_converged == 24
    np.testing.assert_allclose(r.most_negative, [-0.25] * 3, atol=1e-12)


def test_block_lanczos_matches_single_on_generic(power_law_op):
    mv, n, lam = power_law_op
    r = block_lanczos(
        lambda x: torch.stack([mv(c) for c in x.T], 1), n, block_size=3, steps=25, k=20
    )
    assert r.n_converged == 20
    assert np.abs(r.eigenvalues - lam[:20]).max() / lam[0] < 1e-12


# ---------------------------------------------------------------- T15: s_eig vs s_dir
@pytest.mark.parametrize(
    ("p", "q", "s_eig", "s_dir"), [(1, 1, 0.686, 2), (0.5, 1.5, 0.477, 2), (1, 2, 0.892, 3)]
)
def test_t15_aligned_kronecker(p, q, s_eig, s_dir):
    """Aligned Kronecker model: S = diag(k^-p), A = diag(k^-q); eigenvalues i^-p j^-q;
    s_eig[1,20] vs s_dir."""
    n = 400
    k = torch.arange(1, n + 1, dtype=F64)
    sd, ad = k**-p, k**-q
    mv = _kron_diag(sd, ad)
    exact = np.sort(np.outer(sd.numpy(), ad.numpy()).ravel())[::-1][:20]
    assert round(_exponent(exact)[0], 3) == s_eig  # docs/maths.md value, 3 decimals
    # The top 20 hold repeated products (i^-p j^-q = j^-p i^-q): single-vector Lanczos finds a
    # multiplicity only through rounding, so it can report 20 converged values and still miss
    # a copy (T14); block Lanczos recovers them.
    single = lanczos_top(mv, n * n, k=20, tol=1e-8, seed=0)
    spectrum = np.unique(np.outer(sd.numpy(), ad.numpy()).ravel())
    found = single.eigenvalues[single.converged]
    nearest = np.abs(found[:, None] - spectrum[None, :]).min(axis=1)
    assert (nearest <= 1e-10 * found).all()  # every converged value is a true eigenvalue

    def mv_block(block: torch.Tensor) -> torch.Tensor:
        return torch.stack([mv(block[:, i]) for i in range(block.shape[1])], 1)

    r = block_lanczos(mv_block, n * n, block_size=4, steps=45, k=20, tol=1e-8, seed=0)
    assert r.n_converged == 20
    np.testing.assert_allclose(r.eigenvalues, exact, rtol=1e-10)
    s_lanczos = _exponent(r.eigenvalues, r.converged)[0]
    assert s_lanczos == pytest.approx(_exponent(exact)[0], abs=1e-9)
    assert round(s_lanczos, 3) == s_eig
    # directional curvature h_k = <V_k, H[V_k]> for V_k = e_k e_k^T: h_k = k^-(p+q)
    vk = [
        torch.zeros(n, n, dtype=F64)
        .index_put_((torch.tensor([i]),) * 2, torch.ones(1, dtype=F64))
        .reshape(-1)
        for i in range(20)
    ]
    h = np.array([float(v @ mv(v)) for v in vk])
    np.testing.assert_allclose(h, np.arange(1.0, 21.0) ** -(p + q), rtol=1e-14)
    assert _exponent(h)[0] == pytest.approx(s_dir, abs=1e-9)
    if p == q == 1:  # distinct values only (no multiplicities) would give 1/n, n ≤ 20
        assert _exponent(1 / np.arange(1, 21))[0] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- general correctness
def test_most_negative_non_psd():
    n = 300
    a = _random_symmetric(n, seed=5)
    exact = np.linalg.eigvalsh(a.numpy())
    r = lanczos(lambda v: a @ v, n, steps=100, k=5, n_negative=3)
    np.testing.assert_allclose(r.most_negative, exact[:3], atol=1e-8)
    assert np.all(np.diff(r.most_negative) > 0)
    assert r.negative_residuals.max() < 1e-8 * np.abs(exact).max()
    np.testing.assert_allclose(r.eigenvalues, exact[::-1][:5], atol=1e-8)


def test_rank_deficient_breakdown_restart():
    u = _orthogonal(50, seed=7, cols=3)
    d = torch.tensor([3.0, 2.0, 1.0], dtype=F64)
    mv = lambda v: u @ (d * (u.T @ v))  # noqa: E731
    for r in (lanczos(mv, 50, steps=20, k=5), lanczos_top(mv, 50, k=5)):
        assert not np.isnan(r.eigenvalues).any() and r.eigenvalues.shape == (5,)
        np.testing.assert_allclose(r.eigenvalues[:3], [3.0, 2.0, 1.0], atol=1e-12)
        assert np.abs(r.eigenvalues[3:]).max() < 1e-12
        assert r.converged.all()
        # Krylov space {v, Hv, H²v, H³v} is invariant (4 steps); one restart gives a null vector
        assert r.steps == 5 and r.restarts == 1


def test_agrees_with_eigsh():
    n = 300
    a = _random_symmetric(n, seed=11)
    ref = scipy.sparse.linalg.eigsh(a.numpy(), k=10, which="LA", tol=1e-14)[0][::-1]
    r = lanczos_top(lambda v: a @ v, n, k=10, tol=1e-10)
    assert r.n_converged == 10
    np.testing.assert_allclose(r.eigenvalues, ref, atol=1e-9)


def test_tiny_dimensions_and_dtypes():
    r = lanczos(lambda v: 2 * v, 1, steps=5, k=3)
    assert r.eigenvalues.tolist() == [2.0] and r.steps == 1 and r.converged.all()
    r = lanczos_top(lambda v: 0 * v, 3, k=5)  # zero operator: all eigenvalues 0, k > dim
    assert r.eigenvalues.tolist() == [0.0, 0.0, 0.0] and r.converged.all()
    diag = torch.arange(1, 8, dtype=F64)
    r = lanczos(lambda v: (diag * v).float(), 7, steps=100, k=10, tol=1e-4)  # float32 HVP
    np.testing.assert_allclose(r.eigenvalues, np.arange(7, 0, -1), rtol=1e-6)
    r = block_lanczos(lambda x: diag[:, None] * x, 7, block_size=3, steps=5, k=10)
    np.testing.assert_allclose(r.eigenvalues, np.arange(7, 0, -1), atol=1e-12)
    assert r.steps == 7
