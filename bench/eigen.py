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
from workers.curvature.ggn_block import ggn_block
from workers.curvature.hvp import BlockHessian, block_matvec, layer_matvec
from workers.curvature.lanczos import lanczos_top
from workers.curvature.routes import ggn_refusal
from workers.curvature.seeded_lanczos import block_lanczos_top

K = 20
AGREE = 1e-6
DENSE_MAX = 2500
BLOCK = 10  # columns per later block (the first is the K gradient directions)


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


def block_method(s: Setup, tol: float, *, ggn: bool) -> Callable[[], dict[str, Any]]:
    """curvprof's seeded block Lanczos: the first block is the K gradient directions
    vec(u_k v_kᵀ) (their products are computed here, in one batched call, and counted: in a
    profile they come from the h_k step), later blocks at most ``BLOCK`` columns, each block's
    products from one batched call: the GGN operator (``ggn=True``: the route decision, proof
    and two-direction check, is timed too) or the batched double backward."""
    start = torch.stack(
        [torch.outer(s.U[:, k], s.V[:, k]).reshape(-1) for k in range(s.U.shape[1])], dim=1
    )

    def run() -> dict[str, Any]:
        weight = s.weight
        if ggn:
            with torch.enable_grad():
                op = ggn_block(s.model, [s.batch], s.spec, s.U, s.V)
            if isinstance(op, str):
                raise RuntimeError(f"GGN refused: {op}")
            products, release = op.products, op.release
        else:
            block = BlockHessian(s.model, [s.batch], s.spec.parameter)
            products, release = block.batched_products, block.release
        matvec = block_matvec(products, s.spec, weight)
        with torch.enable_grad():
            res = block_lanczos_top(
                matvec, s.dim, k=K, tol=tol, start=start, start_products=matvec(start),
                block_size=BLOCK,
            )  # fmt: skip
        release()
        return {
            "eigenvalues": res.eigenvalues,
            "n_hvp": res.n_matvec + start.shape[1],
            "self_converged": res.n_converged,
        }

    return run


def agree(vals: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    v = np.full(K, np.nan)
    v[: min(K, len(vals))] = np.asarray(vals, dtype=float)[:K]
    rel = np.abs(v - ref) / np.abs(ref)
    return int(np.sum(rel <= AGREE)), float(np.nanmax(rel))


def run_case(
    s: Setup, repeats: int, *, with_pyhessian: bool, with_eigenthings: bool = True
) -> dict[str, Any]:
    ref, how = reference(s)
    have = peers.available()
    cur = curvprof_method(s, tol=1e-6)
    todo = [Entry("curvprof lanczos_top (single vector)", cur, repeats)]
    todo.append(
        Entry(
            "curvprof block Lanczos, batched double backward",
            block_method(s, 1e-6, ggn=False),
            repeats,
        )
    )
    with torch.enable_grad():
        refusal = ggn_refusal(s.model, [s.batch], s.spec, s.U, s.V)
    if refusal is None:
        todo.append(
            Entry("curvprof block Lanczos, batched GGN", block_method(s, 1e-6, ggn=True), repeats)
        )
    probe = cur()
    if have["curvlinops"]:
        todo.append(
            Entry("curvlinops + eigsh (tol 1e-6)", peers.curvlinops_eigsh(s, K, 1e-6), repeats)
        )
    if have["eigenthings"] and with_eigenthings:
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
        "ggn_refusal": refusal,
        "reference_top": ref.tolist(),
        "gap_ratio_19_20": float(ref[18] / ref[19]) if ref[19] != 0 else float("nan"),
        "gradient_seconds": None,
        "rows": rows,
    }


def main() -> None:
    """``python -m bench.eigen [--models cnn,gpt,mlp] [--repeats 3] [--out FILE]``: case 2
    alone (curvprof's solvers beside curvlinops + eigsh; ``--all-peers`` adds the others)."""
    import argparse
    import json
    import os
    from pathlib import Path

    from bench import cases, report

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--models", default="cnn,gpt,mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--all-peers", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    batch = {"cnn": 256, "gpt": 32, "mlp": 1024}
    out = []
    for name in args.models.split(","):
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
        setup = cases.make_setup(name, "full", batch_size=batch[name])
        res = run_case(
            setup, args.repeats, with_pyhessian=args.all_peers, with_eigenthings=args.all_peers
        )
        with open("/proc/loadavg") as f:
            res["loadavg"] = {"before": load_before, "after": f.read().split()[:3]}
        out.append(res)
        print("\n".join(report.eigen_tables([res])), flush=True)
        print(f"load average before/after: {res['loadavg']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
