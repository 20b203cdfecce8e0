"""The GGN route through a layer's output (rank-1 tangents) against dense float64 Hessians."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from tests.curvature.models import MLP, PiecewiseLinearCNN
from tests.curvature.test_engine_dense import dense_reference
from workers.curvature import layer_inventory
from workers.curvature.ggn_output import rank_one_ggn_products, rank_one_layer
from workers.curvature.ggn_route import ggn_products
from workers.curvature.gradient import gradient_svd
from workers.curvature.measurement import make_batch


class TokenMLP(nn.Module):
    """A ReLU MLP on every token (3-D linear inputs), mean-pooled: piecewise linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))).mean(dim=1))


class TiedTwice(nn.Module):
    """fc's weight is used by its call and once more functionally: two uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)) + nn.functional.linear(x, self.fc.weight))


MODELS = {
    "relu_mlp": (lambda: MLP((5, 7, 6, 3), "relu"), (30, 5)),
    "residual_cnn": (lambda: PiecewiseLinearCNN(3), (20, 1, 4, 4)),
    "token_mlp": (TokenMLP, (12, 5, 4)),
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
    batch = make_batch(x, y, loss, dtype=torch.float64)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    return model, x, y, batch, specs


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("case", sorted(MODELS))
def test_rank_one_products_equal_the_dense_block_hessian(case: str, loss: str) -> None:
    model, x, y, batch, specs = setup(case, loss)
    for spec in specs:
        G, H = dense_reference(model, x, y, loss, spec)
        svd = gradient_svd(G, 4)
        flat = torch.stack(
            [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
        )
        scale = float(H.abs().max())
        # two micro-batches add up exactly
        r = rank_one_ggn_products(model, batch.split(x.shape[0] // 2 + 1), spec, svd.U, svd.V)
        assert r is not None and r.M is not None and r.hv_norms is not None, spec.name
        torch.testing.assert_close(r.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(
            r.h, torch.diagonal(flat @ H @ flat.T), rtol=0, atol=1e-12 * scale
        )
        torch.testing.assert_close(
            r.hv_norms, (flat @ H).norm(dim=1), rtol=1e-12, atol=1e-14 * scale
        )
        h_only = rank_one_ggn_products(model, [batch], spec, svd.U, svd.V, weight_products=False)
        assert h_only is not None and h_only.M is not None and h_only.hv_norms is None
        torch.testing.assert_close(h_only.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(h_only.h, r.h, rtol=1e-12, atol=1e-14 * scale)
        # the same numbers as the full weight tangent through the whole model
        full = ggn_products(model, [batch], spec, svd.U, svd.V, weight_products=False)
        torch.testing.assert_close(h_only.h, full.h, rtol=1e-12, atol=1e-14 * scale)


def test_only_single_use_linear_and_convolution_layers_apply() -> None:
    torch.manual_seed(0)
    model = TiedTwice().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    batch = make_batch(x, torch.randint(0, 3, (6,)), "cross_entropy", dtype=torch.float64)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    by_name = {s.name: s for s in specs}
    assert rank_one_layer(model, by_name["fc"]) is None  # two uses
    assert rank_one_layer(model, by_name["head"]) is model.head
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 3))
    x2 = torch.randn(3, 2, 3, 3)
    b2 = make_batch(x2, torch.randint(0, 3, (3,)), "cross_entropy", dtype=torch.float32)
    spec = replace(
        layer_inventory(grouped, b2.split(1, limit=1)[0].forward)[0][0], parameter="0.weight"
    )
    assert rank_one_layer(grouped, spec) is None  # a grouped kernel is not one (m, n) matrix
    untraced = layer_inventory(model)[0][0]
    assert rank_one_layer(model, untraced) is None  # uses unknown
