"""Case 2: top-20 eigenvalues of one layer block, at equal accuracy.

Reference: ``scipy.sparse.linalg.eigsh`` at tol 1e-10 on the reused-graph block HVP (dense
``eigh`` of the assembled block when it has at most ``DENSE_MAX`` entries). A method's
value i *agrees* when |λ_i − ref_i| ≤ 1e-6·|ref_i|; we count agreeing values, not steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from bench import peers
from bench.cases import Setup
from bench.timing import Entry, method_rows
from workers.curvature.hvp import BlockHessian, layer_matvec
from workers.curvature.lanczos import lanczos_top

K = 20
AGREE = 1e-6
DENSE_MAX = 2500


def reference(s: Setup) -> tuple[np.ndarray, str]:
    block = BlockHessian(s.model, [s.batch], s.spec.parameter)
    dim, matvec = layer_matvec(block, s.spec)
    if dim <= DENSE_MAX:
        eye = torch.eye(dim, dtype=torch.float64)
        H = torch.stack([matvec(eye[i]) for i in range(dim)]).numpy()  # type: ignore[operator]
        vals = np.linalg.eigvalsh(0.5 * (H + H.T))[::-1][:K]
        return vals.copy(), "dense eigh"
    op = LinearOperator(
        (dim, dim),
        matvec=lambda v: matvec(torch.from_numpy(np.ascontiguousarray(v).reshape(-1))).numpy(),  # type: ignore[operator]
        dtype=np.float64,
    )
    vals = eigsh(op, k=K, which="LA", tol=1e-10, ncv=3 * K, return_eigenvectors=False)
    block.release()
    return np.sort(vals)[::-1], "eigsh tol 1e-10"


def curvprof_method(s: Setup, tol: float) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        block = BlockHessian(s.model, [s.batch], s.spec.parameter)
        dim, matvec = layer_matvec(block, s.spec)
        res = lanczos_top(matvec, dim, k=K, tol=tol)  # type: ignore[arg-type]
        block.release()
        return {
            "eigenvalues": res.eigenvalues,
            "n_hvp": res.n_matvec,
            "self_converged": res.n_converged,
        }

    return run


def agree(vals: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    v = np.full(K, np.nan)
    v[: min(K, len(vals))] = np.asarray(vals, dtype=float)[:K]
    rel = np.abs(v - ref) / np.abs(ref)
    return int(np.sum(rel <= AGREE)), float(np.nanmax(rel))


def run_case(s: Setup, repeats: int, *, with_pyhessian: bool) -> dict[str, Any]:
    ref, how = reference(s)
    have = peers.available()
    cur = curvprof_method(s, tol=1e-6)
    todo = [Entry("curvprof lanczos_top", cur, repeats)]
    probe = cur()
    if have["curvlinops"]:
        todo.append(
            Entry("curvlinops + eigsh (tol 1e-6)", peers.curvlinops_eigsh(s, K, 1e-6), repeats)
        )
    if have["eigenthings"]:
        todo.append(
            Entry(
                "eigenthings lanczos (docs: 2k steps)", peers.eigenthings_eigs(s, K, None), repeats
            )
        )
        todo.append(
            Entry(
                f"eigenthings lanczos ({probe['n_hvp']} steps, reorth)",
                peers.eigenthings_eigs(s, K, int(probe["n_hvp"])),
                repeats,
            )
        )
    if have["pyhessian"] and with_pyhessian:
        todo.append(Entry("pyhessian power+deflation (docs)", peers.pyhessian_eigs(s, K), 1))
    # a method timed once runs without a warm-up
    todo = [dataclasses.replace(e, warmup=1 if e.repeats > 1 else 0) for e in todo]

    def row(name: str, r: dict[str, Any]) -> dict[str, Any]:
        n_ok, worst = agree(r["out"]["eigenvalues"], ref)
        return {
            "method": name,
            "grads": r["ratio"],
            "n_hvp": r["out"]["n_hvp"],
            "agree_1e-6": n_ok,
            "max_rel_err": worst,
            "ratios": r["ratios"],
            "repeats": len(r["ratios"]),
        }

    rows = method_rows(todo, s.gradient, row)
    return {
        **s.layer_case(),
        "reference": how,
        "reference_top": ref.tolist(),
        "gap_ratio_19_20": float(ref[18] / ref[19]) if ref[19] != 0 else float("nan"),
        "gradient_seconds": None,
        "rows": rows,
    }
