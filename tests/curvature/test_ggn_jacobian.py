"""Products from the held layer-output Jacobian (``ggn_jacobian.py``) against dense float64
block Hessians (``tests/curvature/dense.py``), over several micro-batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.test_ggn_route import float64_case
from tests.curvature.test_seeded_lanczos import CASES
from workers.curvature import ggn_jacobian
from workers.curvature.ggn_jacobian import jacobian_ggn
from workers.curvature.hvp import block_matvec
from workers.curvature.lanczos import lanczos

F64 = torch.float64


@pytest.mark.parametrize("case", ["relu_mlp", "piecewise_cnn"])
def test_products_and_eigenvalues_equal_dense(case: str) -> None:
    model, x, y, batch, specs = float64_case(*CASES[case], "cross_entropy")
    for spec in specs:
        _, H = dense_reference(model, x, y, "cross_entropy", spec)
        op = jacobian_ggn(model, batch.split(x.shape[0] // 3 + 1), spec)
        assert op is not None, spec.name
        mv = block_matvec(op.products, spec, op.weight)
        X = torch.randn(H.shape[0], 4, dtype=F64, generator=torch.Generator().manual_seed(1))
        scale = float(H.abs().max())
        torch.testing.assert_close(mv(X), H @ X, rtol=0, atol=1e-12 * scale)
        dense = np.linalg.eigvalsh(0.5 * (H + H.T).numpy())[::-1]
        k = min(3, H.shape[0])
        one = block_matvec(op.products, spec, op.weight)
        r = lanczos(lambda v, f=one: f(v[:, None])[:, 0], H.shape[0], steps=H.shape[0], k=k)
        np.testing.assert_allclose(r.eigenvalues[:k], dense[:k], rtol=0, atol=1e-9 * dense[0])


def test_refused_over_the_memory_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _, batch, specs = float64_case(*CASES["relu_mlp"], "cross_entropy")
    monkeypatch.setattr(ggn_jacobian, "MAX_ELEMENTS", 1)
    assert jacobian_ggn(model, [batch], specs[0]) is None
