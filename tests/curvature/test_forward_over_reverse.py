"""Forward-over-reverse h_k in the layer output against dense float64 Hessians, on smooth and
piecewise-linear models (tanh, GELU, LayerNorm, softmax attention above the layer)."""

from __future__ import annotations

import pytest
import torch

from tests.curvature.models import MLP, MLPWith, PiecewiseLinearCNN, SmallCNN, TinyTransformer
from tests.curvature.test_engine_dense import dense_reference
from workers.curvature import layer_inventory
from workers.curvature.forward_over_reverse import forward_over_reverse_curvature
from workers.curvature.gradient import gradient_svd
from workers.curvature.measurement import make_batch

MODELS = {
    "tanh_mlp": (lambda: MLP((5, 7, 6, 3), "tanh"), (24, 5)),
    "layer_norm_mlp": (lambda: MLPWith(torch.nn.LayerNorm(6)), (24, 5)),
    "tanh_cnn": (lambda: SmallCNN(3), (12, 1, 6, 6)),
    "transformer": (lambda: TinyTransformer(4, 3), (10, 5, 4)),
    "residual_cnn": (lambda: PiecewiseLinearCNN(3), (12, 1, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_forward_over_reverse_equals_the_dense_block_hessian(case: str) -> None:
    make_model, shape = MODELS[case]
    torch.manual_seed(0)
    model = make_model().double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(*shape, dtype=torch.float64)
    y = torch.randint(0, 3, (shape[0],))
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    checked = 0
    for spec in specs:
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        svd = gradient_svd(G, 4)
        flat = torch.stack(
            [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
        )
        M_ref = flat @ H @ flat.T
        scale = float(H.abs().max())
        out = forward_over_reverse_curvature(
            model, batch.split(shape[0] // 2 + 1), spec, svd.U, svd.V
        )
        assert out is not None, spec.name
        h, M = out
        torch.testing.assert_close(h, torch.diagonal(M_ref), rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(M, M_ref, rtol=0, atol=1e-12 * scale)
        checked += 1
    assert checked == len(specs)
