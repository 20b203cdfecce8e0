"""The GGN-exact route (vmapped JVP and VJP) against dense float64 block Hessians."""

from __future__ import annotations

import pytest
import torch

from tests.curvature.models import MLP, PiecewiseLinearCNN
from tests.curvature.test_engine_dense import dense_reference
from workers.curvature import layer_inventory
from workers.curvature.ggn_route import ggn_products, numerically_ggn
from workers.curvature.gradient import gradient_svd
from workers.curvature.measurement import make_batch

MODELS = {
    "relu_mlp": (lambda: MLP((5, 7, 6, 3), "relu"), (30, 5)),
    "piecewise_cnn": (lambda: PiecewiseLinearCNN(3), (20, 1, 4, 4)),
}


def setup(case: str, loss: str):
    make_model, shape = MODELS[case]
    torch.manual_seed(0)
    model = make_model().double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(*shape, dtype=torch.float64)
    y = (
        torch.randn(shape[0], 3, dtype=torch.float64)
        if loss == "mse"
        else torch.randint(0, 3, (shape[0],))
    )
    return model, x, y, make_batch(x, y, loss, dtype=torch.float64)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("case", sorted(MODELS))
def test_ggn_products_equal_the_dense_block_hessian(case: str, loss: str) -> None:
    model, x, y, batch = setup(case, loss)
    specs, _ = layer_inventory(model)
    for spec in specs:
        G, H = dense_reference(model, x, y, loss, spec)
        svd = gradient_svd(G, 4)
        flat = torch.stack(
            [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
        )
        HV = flat @ H  # rows: vec(H[V_k])
        scale = float(H.abs().max())
        # two micro-batches add up exactly
        r = ggn_products(model, batch.split(x.shape[0] // 2 + 1), spec, svd.U, svd.V)
        assert r.M is not None and r.hv_norms is not None
        torch.testing.assert_close(r.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(
            r.h, torch.diagonal(flat @ H @ flat.T), rtol=0, atol=1e-12 * scale
        )
        torch.testing.assert_close(r.hv_norms, HV.norm(dim=1), rtol=1e-12, atol=1e-14 * scale)
        h_only = ggn_products(model, [batch], spec, svd.U, svd.V, weight_products=False)
        assert h_only.M is not None and h_only.hv_norms is None  # M from the output tangents
        torch.testing.assert_close(h_only.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(h_only.h, r.h, rtol=1e-12, atol=1e-14 * scale)
        assert numerically_ggn(model, [batch], spec, svd.U, svd.V).passed


def test_numerical_check_rejects_a_smooth_block() -> None:
    torch.manual_seed(0)
    model = MLP((5, 7, 6, 3), "tanh").double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    spec = layer_inventory(model)[0][0]
    G, _ = dense_reference(model, x, y, "cross_entropy", spec)
    svd = gradient_svd(G, 4)
    check = numerically_ggn(
        model, [make_batch(x, y, "cross_entropy", dtype=torch.float64)], spec, svd.U, svd.V
    )
    assert not check.passed and check.relative_difference > 1e-3
