"""The GGN-exact route (vmapped JVP and VJP) against dense float64 block Hessians."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.curvature.dense import dense_reference
from tests.curvature.models import MLP, PiecewiseLinearCNN
from workers.curvature import layer_inventory
from workers.curvature.forward_over_reverse import forward_over_reverse_curvature
from workers.curvature.ggn_output import layer_ggn_products, rank_one_layer
from workers.curvature.ggn_route import GGNProducts, ggn_products, numerically_ggn
from workers.curvature.gradient import gradient_svd
from workers.curvature.hvp import BlockHessian
from workers.curvature.measurement import make_batch
from workers.curvature.output_space import output_space_curvature
from workers.curvature.routes import ggn_refusal, routed_curvature


class TokenMLP(nn.Module):
    """A ReLU MLP on every token (3-D linear inputs), mean-pooled: piecewise linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))).mean(dim=1))


MODELS = {
    "relu_mlp": (lambda: MLP((5, 7, 6, 3), "relu"), (30, 5)),
    "piecewise_cnn": (lambda: PiecewiseLinearCNN(3), (20, 1, 4, 4)),
    "token_mlp": (TokenMLP, (12, 5, 4)),
}


def float64_case(make_model, shape, loss: str):
    """(model with every parameter frozen, x, y, batch, traced layer specs), seeded."""
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


def full_tangent_products(model, micro_batches, spec, U, V, **options) -> GGNProducts:
    """``ggn_products`` called as ``layer_ggn_products`` is."""
    return ggn_products(model, micro_batches, spec, (U, V), **options)


@pytest.mark.parametrize("products", [full_tangent_products, layer_ggn_products])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("case", sorted(MODELS))
def test_ggn_products_equal_the_dense_block_hessian(case: str, loss: str, products) -> None:
    """Both implementations: the full weight tangent, and rank-1 output tangents (which
    every layer of these models takes)."""
    model, x, y, batch, specs = float64_case(*MODELS[case], loss)
    for spec in specs:
        assert products is full_tangent_products or rank_one_layer(model, spec) is not None
        G, H = dense_reference(model, x, y, loss, spec)
        svd = gradient_svd(G, 4)
        flat = torch.stack(
            [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
        )
        HV = flat @ H  # rows: vec(H[V_k])
        scale = float(H.abs().max())
        # two micro-batches add up exactly
        r = products(model, batch.split(x.shape[0] // 2 + 1), spec, svd.U, svd.V)
        assert r.M is not None and r.hv_norms is not None
        torch.testing.assert_close(r.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(
            r.h, torch.diagonal(flat @ H @ flat.T), rtol=0, atol=1e-12 * scale
        )
        torch.testing.assert_close(r.hv_norms, HV.norm(dim=1), rtol=1e-12, atol=1e-14 * scale)
        h_only = products(model, [batch], spec, svd.U, svd.V, weight_products=False)
        assert h_only.M is not None and h_only.hv_norms is None  # M from the output tangents
        torch.testing.assert_close(h_only.M, flat @ H @ flat.T, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(h_only.h, r.h, rtol=1e-12, atol=1e-14 * scale)
        check = numerically_ggn(model, [batch], spec, svd.U, svd.V, products=products)
        assert check.passed


@pytest.mark.parametrize("exact", ["weight", "output", "forward_over_reverse"])
def test_numerical_check_rejects_a_smooth_block(exact: str) -> None:
    """Whichever exact h the check takes (the weight-space double backward on an untraced
    spec, the output double backward, forward-over-reverse in the output), tanh is caught."""
    model, x, y, batch, specs = float64_case(
        lambda: MLP((5, 7, 6, 3), "tanh"), (30, 5), "cross_entropy"
    )
    spec = layer_inventory(model)[0][0] if exact == "weight" else specs[0]
    G, _ = dense_reference(model, x, y, "cross_entropy", spec)
    svd = gradient_svd(G, 4)
    exact_in_output = {
        "weight": output_space_curvature,  # does not apply: uses unknown
        "output": output_space_curvature,
        "forward_over_reverse": forward_over_reverse_curvature,
    }[exact]
    check = numerically_ggn(
        model, [batch], spec, svd.U, svd.V, products=layer_ggn_products,
        exact_in_output=exact_in_output,
    )  # fmt: skip
    assert not check.passed and check.relative_difference > 1e-3


class BatchCentred(nn.Module):
    """Piecewise linear, but the examples interact above fc1: its activations are centred
    over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc1(x))
        return self.head(hidden - hidden.mean(dim=0, keepdim=True))


@pytest.mark.parametrize("case", sorted(MODELS))
def test_reverse_passes_and_chunks_equal_the_dense_block_hessian(case: str) -> None:
    """h alone from C = 3 reverse passes and from K forward tangents, each over the whole
    batch and in chunks of 7 examples: the same dense h_k and M."""
    model, x, y, batch, specs = float64_case(*MODELS[case], "cross_entropy")
    for spec in specs:
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        svd = gradient_svd(G, 4)
        flat = torch.stack(
            [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
        )
        M = flat @ H @ flat.T
        scale = float(M.abs().max())
        for reverse_below in (0, 100):  # off; whenever C < 100
            for chunk in (None, 7):
                r = layer_ggn_products(
                    model, batch.split(x.shape[0] // 2 + 1), spec, svd.U, svd.V,
                    weight_products=False, reverse_below=reverse_below, chunk=chunk,
                )  # fmt: skip
                assert r.M is not None
                torch.testing.assert_close(r.M, M, rtol=0, atol=1e-12 * scale)
                torch.testing.assert_close(r.h, torch.diagonal(M), rtol=0, atol=1e-12 * scale)


def test_examples_that_interact_fail_the_check_and_the_route_stays_exact() -> None:
    """Chunks and reverse passes assume independent examples; the check runs both on its
    sub-batch, so batch centring above the layer is refused, and the layer's h (by another
    route) still equals the dense one."""
    model, x, y, batch, specs = float64_case(BatchCentred, (30, 5), "cross_entropy")
    spec = specs[0]
    G, H = dense_reference(model, x, y, "cross_entropy", spec)
    svd = gradient_svd(G, 4)
    reason = ggn_refusal(model, [batch], spec, svd.U, svd.V)
    assert reason is not None and reason.startswith("exact h differs from the GGN")
    block = BlockHessian(model, [batch], spec.parameter)
    routed = routed_curvature(model, [batch], spec, svd.U, svd.V, block=block, diagnostics=False)
    block.release()
    assert routed.route == "output_double_backward"
    flat = torch.stack([torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(4)])
    ref = torch.diagonal(flat @ H @ flat.T)
    torch.testing.assert_close(routed.h, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
