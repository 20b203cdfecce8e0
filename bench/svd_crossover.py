"""Full thin SVD against randomized block Krylov for the top 20 triplets (docs/benchmarks.md).

    OPENBLAS_NUM_THREADS=1 python -m bench.svd_crossover

Synthetic gradients G = U diag(k^-γ) Vᵀ in float64. Prints a markdown row per shape: process
CPU seconds (best of 3; CPU time, not wall time, because this machine is shared), their
ratio, the Krylov blocks used and max_j≤20 |σ_j − σ_j^full| / σ_j^full (checked first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from bench.report import table
from workers.curvature.randomized_svd import top_singular_triplets

SHAPES = [(256, 256, 0.7), (384, 384, 0.7), (512, 512, 0.5), (768, 768, 0.5), (768, 3072, 0.5)]


def cpu_seconds(fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def synthetic_gradient(m: int, n: int, gamma: float) -> torch.Tensor:
    r = min(m, n)
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return (U * torch.arange(1, r + 1, dtype=torch.float64) ** -gamma) @ V.T


def main() -> None:
    rows = []
    for m, n, gamma in SHAPES:
        G = synthetic_gradient(m, n, gamma)
        full = torch.linalg.svdvals(G)[:20]
        top = top_singular_triplets(G, 20)
        err = float(((top.S[:20] - full).abs() / full).max())
        assert err < 1e-10, err
        a = cpu_seconds(lambda G=G: torch.linalg.svd(G, full_matrices=False))
        b = cpu_seconds(lambda G=G: top_singular_triplets(G, 20))
        rows.append(
            [
                f"{m}×{n}",
                f"k^-{gamma}",
                f"{a:.2f}",
                f"{b:.2f}",
                f"{a / b:.2f}",
                str(top.blocks),
                f"{err:.1e}",
            ]
        )
    header = [
        "shape",
        "σ_k",
        "full SVD (CPU s)",
        "block Krylov (CPU s)",
        "speed-up",
        "blocks",
        "σ error",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()
