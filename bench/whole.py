"""Case 3: a whole profile (every layer: gradient SVD, K = 20 h_k, 20 Lanczos values, fits).

curvprof: ``profile_model(..., top_k=20, lanczos_steps=20)`` (which also computes the
Kronecker/EF projections, diagnostics, bootstrap fits, participation ratios and the
preconditioner). Peer pipelines: one plain gradient pass + float64 SVD for all layers, then
per layer the peer's best h_k call and 20 Lanczos steps (full reorthogonalisation, the same
driver for every peer) on the peer's HVP, then log-log least-squares fits. Costs are in
gradients of every analysable matrix (paired median).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench import peers
from bench.cases import DTYPE, K, Setup
from bench.timing import Entry, method_rows
from workers.curvature.fits import eigenvalue_exponent, ols_loglog
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.profile import profile_model

STEPS = 20


def lanczos_steps(
    matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, steps: int
) -> np.ndarray:
    """Plain Lanczos with full reorthogonalisation (twice), Ritz values of T_m."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(dim, generator=gen, dtype=torch.float64)
    Q = [q / q.norm()]
    a, b = [], []
    for j in range(min(steps, dim)):
        w = matvec(Q[j]).reshape(-1).to(torch.float64)
        a.append(float(Q[j] @ w))
        B = torch.stack(Q)
        for _ in range(2):
            w = w - B.t() @ (B @ w)
        beta = float(w.norm())
        if beta < 1e-12 or j + 1 == steps:
            break
        b.append(beta)
        Q.append(w / beta)
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    return np.sort(np.linalg.eigvalsh(T))[::-1]


def _fits(sigma: np.ndarray, h: np.ndarray, eigs: np.ndarray) -> dict[str, float]:
    k = np.arange(1, len(sigma) + 1)
    ok = h > 0
    out = {"alpha": float("nan"), "gamma": float("nan"), "s": float("nan"), "s_eig": float("nan")}
    if ok.sum() >= 2:
        out["alpha"] = ols_loglog(sigma[ok], h[ok]).slope
        out["s"] = -ols_loglog(k[ok], h[ok]).slope
    out["gamma"] = -ols_loglog(k, sigma).slope
    out["s_eig"] = -eigenvalue_exponent(eigs).slope
    return out


def _layer_setup(s: Setup, spec: Any, U: torch.Tensor, V: torch.Tensor) -> Setup:
    dirs = [spec.embed(torch.outer(U[:, k], V[:, k])) for k in range(U.shape[1])]
    return dataclasses.replace(s, spec=spec, U=U, V=V, directions=dirs)


def _svds(s: Setup) -> dict[str, Any]:
    grads, _ = layer_gradients(s.model, [s.batch], s.specs)
    return {sp.name: gradient_svd(grads[sp.name], K) for sp in s.specs}


def peer_pipeline(s: Setup, peer: str) -> Callable[[], dict[str, Any]]:
    """Build every per-layer closure first (model copies are not timed), then run them.

    Per layer one operator (PyHessian: one constructor = one create_graph gradient) serves
    both the K directions and the Lanczos steps, as a careful user would write it."""
    svds = _svds(s)
    layers = []
    for sp in s.specs:
        svd = svds[sp.name]
        if svd.k == 0:
            continue
        ls = _layer_setup(s, sp, svd.U, svd.V)
        layers.append((sp, _LAYER[peer](ls)))

    def run() -> dict[str, Any]:
        fresh = _svds(s)  # the shared gradient pass + SVD, timed
        out = {}
        for sp, layer in layers:
            h, eigs = layer()
            out[sp.name] = _fits(fresh[sp.name].sigma.numpy(), h, eigs)
        return out

    return run


LayerRun = Callable[[], tuple[np.ndarray, np.ndarray]]


def _pyhessian_layer(ls: Setup) -> LayerRun:
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    module, w = ls.peer_model(freeze_others=True)
    crit = ls.criterion()
    shape, dim = w.shape, w.numel()

    def run() -> tuple[np.ndarray, np.ndarray]:
        module.zero_grad(set_to_none=True)
        comp = hessian(module, crit, data=(ls.x, ls.y), cuda=False)
        hvs = [hessian_vector_product(comp.gradsH, comp.params, [d])[0] for d in ls.directions]
        h = np.array([float((d * hx).sum()) for d, hx in zip(ls.directions, hvs, strict=True)])
        eigs = lanczos_steps(
            lambda v: hessian_vector_product(comp.gradsH, comp.params, [v.reshape(shape)])[0],
            dim,
            STEPS,
        )
        module.zero_grad(set_to_none=True)
        return h, eigs

    return run


def _curvlinops_layer(ls: Setup) -> LayerRun:
    flat = torch.stack([d.reshape(-1) for d in ls.directions], dim=1)

    def run() -> tuple[np.ndarray, np.ndarray]:
        H = peers.curvlinops_operator(ls, check_deterministic=False)
        h = (flat * (H @ flat)).sum(0).numpy()
        return h, lanczos_steps(lambda v: H @ v, flat.shape[0], STEPS)

    return run


def _eigenthings_layer(ls: Setup) -> LayerRun:
    from hessian_eigenthings import lanczos

    def run() -> tuple[np.ndarray, np.ndarray]:
        op = peers.eigenthings_operator(ls)
        h = np.array([float(d.reshape(-1) @ op.matvec(d.reshape(-1))) for d in ls.directions])
        res = lanczos(op, k=min(K, STEPS), max_iter=STEPS, which="LA", seed=0)
        return h, np.sort(res.eigenvalues.detach().numpy())[::-1]

    return run


_LAYER: dict[str, Callable[[Setup], LayerRun]] = {
    "pyhessian": _pyhessian_layer,
    "curvlinops": _curvlinops_layer,
    "eigenthings": _eigenthings_layer,
}


def curvprof_profile(s: Setup, model32: torch.nn.Module) -> Callable[[], Any]:
    def run() -> Any:
        return profile_model(
            model32, s.x, s.y, loss=s.loss, top_k=K, lanczos_steps=STEPS, dtype=DTYPE
        )

    return run


def run_case(s: Setup, model32: torch.nn.Module, repeats: int) -> dict[str, Any]:
    have = peers.available()
    todo = [Entry("curvprof profile_model", curvprof_profile(s, model32), repeats)]
    for peer in ("pyhessian", "curvlinops", "eigenthings"):
        if have[peer]:
            todo.append(Entry(f"{peer} pipeline (best use)", peer_pipeline(s, peer), repeats))
    rows = method_rows(
        todo,
        s.full_gradient,
        lambda name, r: {
            "method": name,
            "grads": r["ratio"],
            "seconds": r["seconds"],
            "ratios": r["ratios"],
        },
    )
    return {
        "model": s.name,
        "layers": len(s.specs),
        "batch": int(s.x.shape[0]),
        "gradient_seconds": None,
        "rows": rows,
    }
