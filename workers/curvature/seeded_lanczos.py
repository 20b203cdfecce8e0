"""Top-k eigenvalues by a seeded block Krylov method with batched block products
(docs/engine.md, step 6; docs/maths.md#lanczos-and-the-breakdown-test).

The basis Q (orthonormal rows q_i, float64) and the products P = H Q (rows H q_i) are both
kept, so the Rayleigh–Ritz step is exact and every residual is measured, not bounded:

    T = Q Hᵀ-symmetrised Qᵀ = ½ (Q Pᵀ + P Qᵀ),    T s_i = θ_i s_i,    y_i = Qᵀ s_i,
    r_i = H y_i − θ_i y_i = Pᵀ s_i − θ_i Qᵀ s_i,   converged when ‖r_i‖ ≤ tol · max|θ|.

The first block is the caller's ``start`` (the K gradient directions V_k = u_k v_kᵀ of the
profile; with ``start_products`` = H[V_k], already computed, it costs no product). Each
further block is the residuals r_i of the top-k Ritz pairs not yet converged (at most
``block_size`` of them, and ``extra`` pairs below the k-th, which sharpen the k-th value's
gap), orthogonalised twice against Q: in exact arithmetic the residuals of a block Krylov
space span its next block, so this is block Lanczos whose block shrinks as values converge.
Each block's products come from one call of the batched operator (``hvp.batched_matvec``,
``ggn_block.py``), not b separate HVPs. A block with no direction left outside span Q
(an invariant subspace) is replaced by random vectors while the space is not exhausted.

Result semantics as ``lanczos.LanczosResult``: ``steps`` the basis size, ``n_matvec`` the
operator columns this call applied (the ``start_products`` not counted), ``restarts`` the
random directions added, ``residuals`` the measured ‖r_i‖.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import torch

from workers.curvature.lanczos import (
    BlockMatVec,
    LanczosOptions,
    LanczosResult,
    options_with_defaults,
    ritz_result,
)

_F64 = torch.float64
_DEPENDENT = 1e-10  # a new direction whose norm falls below this after projection is dropped


def _orthonormal_new(
    x: torch.Tensor, basis: torch.Tensor, width: int, gen: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Up to ``width`` orthonormal rows spanning rows of ``x`` outside span(basis), filled with
    random directions when fewer remain; (rows, random rows used)."""
    dim = x.shape[1]
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    kept = x.new_zeros((0, dim))
    for _ in range(2):
        if basis.shape[0]:
            x = x - (x @ basis.t()) @ basis
            x = x - (x @ basis.t()) @ basis
        if x.shape[0] == 0:
            break
        u, sig, _ = torch.linalg.svd(x.t(), full_matrices=False)
        kept = u[:, sig > _DEPENDENT].t()
        x = kept
    filled = 0
    room = min(width, dim - basis.shape[0])
    if kept.shape[0] < room:
        filled = room - kept.shape[0]
        z = torch.randn((filled, dim), generator=gen, dtype=_F64, device=x.device)
        both = torch.cat([basis, kept])
        for _ in range(2):
            z = z - (z @ both.t()) @ both
        z = torch.linalg.qr(z.t()).Q.t()
        kept = torch.cat([kept, z])
    return kept[:room].contiguous(), filled


def block_lanczos_top(
    matvec_block: BlockMatVec,
    dim: int,
    *,
    start: torch.Tensor | None = None,
    start_products: torch.Tensor | None = None,
    block_size: int | None = None,
    extra: int = 2,
    m_max: int = 300,
    **options: Unpack[LanczosOptions],
) -> LanczosResult:
    """Top-k eigenpairs of the symmetric operator ``matvec_block`` ((dim, b) ↦ H·(dim, b)).

    ``start`` (dim, b0): first block (default b0 = ``block_size`` random columns);
    ``start_products``: H·start when known. ``block_size`` caps every later block (default
    k + ``extra``). Stops when all min(k, dim) top values have ‖r_i‖ ≤ tol·max|θ|, or the
    basis reaches ``m_max`` or ``dim``.
    """
    o = options_with_defaults(options)
    k, tol = o["k"], o["tol"]
    if k < 1 or m_max < 1 or dim < 1:
        raise ValueError("k, m_max and dim must be >= 1")
    width = block_size if block_size is not None else k + extra
    if width < 1:
        raise ValueError("block_size must be >= 1")
    dev = torch.device(o["device"])
    gen = torch.Generator(device=dev).manual_seed(o["seed"])
    cap = min(m_max, dim)
    Q = torch.empty((cap, dim), dtype=_F64, device=dev)
    P = torch.empty((cap, dim), dtype=_F64, device=dev)
    T = np.zeros((cap, cap))
    n = n_matvec = restarts = 0

    def apply(rows: torch.Tensor) -> torch.Tensor:
        out = matvec_block(rows.t().contiguous())
        return out.to(device=dev, dtype=_F64).reshape(dim, rows.shape[0]).t()

    def append(rows: torch.Tensor, products: torch.Tensor) -> None:
        nonlocal n
        b = rows.shape[0]
        Q[n : n + b], P[n : n + b] = rows, products
        cross = (Q[: n + b] @ products.t()).cpu().numpy()  # (n+b, b): q_i·H q_j, j new
        back = (rows @ P[:n].t()).cpu().numpy()  # (b, n): q_j·H q_i, i old
        T[: n + b, n : n + b] = cross
        T[n : n + b, :n] = 0.5 * (back + cross[:n].T)
        T[:n, n : n + b] = T[n : n + b, :n].T
        new = T[n : n + b, n : n + b]
        T[n : n + b, n : n + b] = 0.5 * (new + new.T)
        n += b

    if start is None:
        first, _ = _orthonormal_new(
            torch.zeros((0, dim), dtype=_F64, device=dev), Q[:0], min(width, cap), gen
        )
        append(first, apply(first))
        n_matvec += first.shape[0]
    else:
        S = start.to(device=dev, dtype=_F64).reshape(dim, -1)[:, :cap]
        q, r = torch.linalg.qr(S)
        if start_products is None:
            append(q.t(), apply(q.t()))
            n_matvec += q.shape[1]
        else:  # H Q = (H S) R⁻¹
            HS = start_products.to(device=dev, dtype=_F64).reshape(dim, -1)[:, : q.shape[1]]
            HQ = torch.linalg.solve_triangular(r, HS, upper=True, left=False)
            append(q.t(), HQ.t())
    want = min(k, dim)
    while True:
        theta, s = np.linalg.eigh(T[:n, :n])
        order = np.argsort(-theta, kind="stable")
        scale = float(np.max(np.abs(theta)))
        probe = order[: min(want + extra, n)]
        coeff = torch.from_numpy(np.ascontiguousarray(s[:, probe])).to(dev)
        resid = P[:n].t() @ coeff - (Q[:n].t() @ coeff) * torch.from_numpy(theta[probe]).to(dev)
        norms = resid.norm(dim=0).cpu().numpy()
        open_ = norms > tol * scale
        if not open_[:want].any() or n >= cap:
            break
        pick = np.flatnonzero(open_)[: min(width, cap - n)]
        rows, filled = _orthonormal_new(resid[:, pick].t(), Q[:n], pick.size, gen)
        if rows.shape[0] == 0:
            break
        restarts += filled
        append(rows, apply(rows))
        n_matvec += rows.shape[0]
    residual = np.full(n, np.inf)
    residual[probe] = norms
    low = np.argsort(theta, kind="stable")[: min(o["n_negative"], n)]
    low = low[~np.isin(low, probe)]
    if low.size:
        c = torch.from_numpy(np.ascontiguousarray(s[:, low])).to(dev)
        r_low = P[:n].t() @ c - (Q[:n].t() @ c) * torch.from_numpy(theta[low]).to(dev)
        residual[low] = r_low.norm(dim=0).cpu().numpy()
    return ritz_result(
        theta,
        residual,
        s,
        Q[:n],
        k=k,
        tol=tol,
        n_negative=o["n_negative"],
        steps=n,
        n_matvec=n_matvec,
        restarts=restarts,
        return_vectors=o["return_vectors"],
    )
