"""Top-K singular triplets of a wide gradient by randomized block Krylov (docs/engine.md).

The thin SVD of an m×n gradient costs O(mn·min(m, n)); the top K triplets need only
matrix products with G. With G of shape m ≤ n (transpose otherwise), a random start block
Ω (n × b, b = K + oversample) and Y_0 = orth(G Ω), the block Krylov space

    span{Y_0, (G Gᵀ) Y_0, (G Gᵀ)² Y_0, ...}

is grown one block at a time (each block orthogonalised twice against the basis Q) and the
triplets come by Rayleigh–Ritz: B = Qᵀ G, B Bᵀ = Ũ Σ² Ũᵀ (a small eigenproblem),
U = Q Ũ, V = Bᵀ Ũ Σ⁻¹. Because
Gᵀ u_j = σ_j v_j holds exactly for these triplets, the residual r_j = ‖G v_j − σ_j u_j‖
measures the error: some singular value of G lies within r_j of σ_j, and σ_j is accurate to
about r_j² / gap_j. Blocks are added until r_j ≤ ``tol``·σ_1 for j ≤ K (1e-8 by default,
i.e. σ to ~1e-14 relative at ordinary gaps) or the basis spans all of ℝ^m (then exact).
Block Krylov converges like Chebyshev polynomials in the gap (Musco & Musco, NeurIPS 2015),
far faster than plain power iterations on slowly decaying gradient spectra.

The numerical rank r_num = #{σ > τσ_1} is counted among the b computed values; when even
the smallest of them exceeds τσ_1 the count is a lower bound (``rank_is_lower_bound``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_F64 = torch.float64


@dataclass
class TopSingular:
    """σ_1 ≥ … ≥ σ_b with their vectors (float64), and the residuals of the top K."""

    U: torch.Tensor  # (m, b)
    S: torch.Tensor  # (b,)
    V: torch.Tensor  # (n, b)
    residuals: torch.Tensor  # (K,) ‖G v_j − σ_j u_j‖
    blocks: int  # Krylov blocks used
    exact: bool  # the basis spanned the whole row space

    def rank_count(self, tau: float) -> tuple[int, bool]:
        """(#{σ_j > τσ_1} among the computed values, whether that is only a lower bound)."""
        if self.S.numel() == 0 or float(self.S[0]) == 0.0:
            return 0, False
        count = int((tau * self.S[0] < self.S).sum())
        return count, (not self.exact) and count == self.S.numel()


def _orth_against(block: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning ``block`` minus its projection on ``basis`` (twice)."""
    for _ in range(2):
        if basis.shape[1]:
            block = block - basis @ (basis.T @ block)
    q, r = torch.linalg.qr(block)
    keep = r.diagonal().abs() > 1e-12 * max(float(r.diagonal().abs().max()), 1e-300)
    kept: torch.Tensor = q[:, keep]
    return kept


def _ritz_triplets(
    rows: torch.Tensor, basis: torch.Tensor, b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top b Ritz triplets of A from B = Qᵀ A through the small Gram matrix B Bᵀ = Ũ Σ² Ũᵀ:
    U = Q Ũ, V = Bᵀ Ũ / σ (σ_j to ~ε σ_1²/σ_j², ample for the top K)."""
    evals, evecs = torch.linalg.eigh(rows @ rows.T)
    order = torch.argsort(evals, descending=True)[:b]
    S = evals[order].clamp_min(0).sqrt()
    Ub = evecs[:, order]
    keep = S > 0
    S, Ub = S[keep], Ub[:, keep]
    return basis @ Ub, S, (rows.T @ Ub) / S


def top_singular_triplets(
    G: torch.Tensor,
    k: int,
    *,
    oversample: int = 10,
    tol: float = 1e-8,
    max_blocks: int = 40,
    seed: int = 0,
) -> TopSingular:
    """The top min(k, ...) triplets of G (any shape) by randomized block Krylov, float64."""
    A = G.to(_F64)
    transposed = A.shape[0] > A.shape[1]
    if transposed:
        A = A.T
    m, n = A.shape
    b = min(k + oversample, m)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn((n, b), generator=generator, dtype=_F64).to(A.device)
    basis = _orth_against(A @ omega, A.new_zeros((m, 0)))
    rows = (A.T @ basis).T  # B = Qᵀ A, grown by one block of rows per Krylov step
    last = basis.shape[1]  # width of the newest block
    blocks = 1
    while True:
        U, S, V = _ritz_triplets(rows, basis, b)
        top = min(k, S.numel())
        residuals = torch.linalg.norm(A @ V[:, :top] - U[:, :top] * S[:top], dim=0)
        exact = basis.shape[1] >= m
        scale = float(S[0]) if S.numel() else 0.0
        if exact or blocks >= max_blocks or bool((residuals <= tol * scale).all()):
            break
        new = _orth_against(A @ rows[-last:].T, basis)  # (A Aᵀ) times the newest block
        if new.shape[1] == 0:  # invariant subspace: the Ritz values are exact
            exact = True
            break
        basis = torch.cat([basis, new], dim=1)
        rows = torch.cat([rows, (A.T @ new).T], dim=0)
        last = new.shape[1]
        blocks += 1
    if transposed:
        U, V = V, U
    return TopSingular(U, S, V, residuals, blocks, exact)
