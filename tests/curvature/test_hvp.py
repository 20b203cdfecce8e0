"""Block Hessian-vector products, the directional curvature h_k with its compressed matrix,
their diagnostics and the Lanczos operator, against the dense float64 block Hessian."""

from __future__ import annotations

import math

import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.models import tanh_mlp_batch
from workers.curvature.gradient import gradient_svd
from workers.curvature.hvp import (
    BlockHessian,
    compressed_diagnostics,
    directional_curvature,
    layer_matvec,
)
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch


def _setup(micro: int | None = None):
    model, x, y = tanh_mlp_batch()
    spec = next(s for s in layer_inventory(model)[0] if s.name == "net.0")
    G, H = dense_reference(model, x, y, "cross_entropy", spec)
    for p in model.parameters():
        p.requires_grad_(False)
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    block = BlockHessian(model, batch.split(micro), spec.parameter)
    return spec, G, H, block


@pytest.mark.parametrize("micro", [None, 3])
def test_products_and_h_equal_the_dense_hessian(micro: int | None) -> None:
    spec, G, H, block = _setup(micro)
    m, n = spec.shape
    X = torch.randn(m, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (HX,) = block.products([spec.embed(X)])
    torch.testing.assert_close(
        spec.matrix(HX).reshape(-1), H @ X.reshape(-1), rtol=1e-10, atol=1e-13
    )
    svd = gradient_svd(G, 4)
    curv = directional_curvature(block, spec, svd.U, svd.V)
    dirs = torch.stack([torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)])
    M = dirs @ H @ dirs.T  # M_jk = <V_j, H V_k>
    torch.testing.assert_close(curv.M, M, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(curv.h, torch.diagonal(M), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(
        curv.hv_norms, torch.linalg.norm(dirs @ H, dim=1), rtol=1e-10, atol=1e-13
    )
    dim, matvec = layer_matvec(block, spec)
    assert dim == m * n
    v = torch.randn(dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(matvec(v), H @ v, rtol=1e-10, atol=1e-13)
    block.release()


def test_compressed_diagnostics_closed_forms() -> None:
    M = torch.tensor([[2.0, 0.1, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
    h = torch.diagonal(M)
    norms = torch.tensor([2.5, 1.0, 1.0], dtype=torch.float64)
    d = compressed_diagnostics(M, h, norms)
    assert d.hvp_noise == pytest.approx(0.0)  # |0.1-0.3|, 0, 0: the median is 0
    off = math.sqrt(0.1**2 + 0.3**2 + 2 * 0.2**2)
    assert d.eps_off == pytest.approx(off / float(torch.linalg.norm(M)), rel=1e-14)
    assert d.residuals == pytest.approx([math.sqrt(1 - (2 / 2.5) ** 2), 0.0, math.sqrt(1 - 0.25)])
    assert d.compressed == M.tolist()
    single = compressed_diagnostics(M[:1, :1], h[:1], norms[:1])
    assert math.isnan(single.hvp_noise) and math.isnan(single.eps_off)
