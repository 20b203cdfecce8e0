"""Closed-form cases through the engine, float64: T1 rank-one linear layer (MSE, one sample),
T2 linear layer with an exact Kronecker Hessian, T5 Kronecker quadratic with exact α, T10
softmax head rank ≤ C − 1, T12 ReLU block = Gauss–Newton, T13 Ky Fan partial sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.curvature.models import MLP
from workers.curvature import fit_exponents, profile_model
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch


def test_t1_single_sample_rank_one() -> None:
    lin = nn.Linear(3, 2, bias=False)
    nn.init.zeros_(lin.weight)
    x = torch.tensor([[1.0, 2.0, 2.0]])
    y = torch.tensor([[3.0, 4.0]])
    profile = profile_model(lin, x, y, loss="mse", top_k=5, lanczos_steps=6)
    (layer,) = profile.layers
    assert layer.rank_num == 1 and layer.k == 1
    assert layer.sigma == pytest.approx([15.0], rel=1e-12)
    assert layer.h == pytest.approx([9.0], rel=1e-12)
    # eigenvalues 9 (x2) and 0 (x4): single-vector Lanczos sees 9 once
    assert layer.eigenvalues[0] == pytest.approx(9.0, rel=1e-10)
    assert layer.alpha is None and "few_points" in layer.flags
    # the Newton step with the measured h solves the problem
    G = torch.tensor([[-3.0, -6.0, -6.0], [-4.0, -8.0, -8.0]], dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(G)
    W_new = -(layer.sigma[0] / layer.h[0]) * torch.outer(U[:, 0], Vh[0])
    assert torch.allclose(W_new @ x[0].double(), y[0].double(), atol=1e-12)


def test_t2_linear_batch_kronecker_and_restriction() -> None:
    lin = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    profile = profile_model(lin, x, y, loss="mse", top_k=5, lanczos_steps=6)
    (layer,) = profile.layers
    C = torch.diag(torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64))
    with torch.no_grad():
        G = (lin.weight.double() @ x.double().T - y.double().T) @ x.double() / 2
    _, _, Vh = torch.linalg.svd(G)
    expected = [float(Vh[k] @ C @ Vh[k]) for k in range(layer.k)]
    np.testing.assert_allclose(layer.h, expected, rtol=1e-12)
    converged = [v for v, c in zip(layer.eigenvalues, layer.lanczos.converged, strict=True) if c]
    assert sorted({round(v, 10) for v in converged}, reverse=True)[:2] == [2.0, 0.5]


def test_t2_two_layer_block_ignores_first_layer() -> None:
    torch.manual_seed(0)
    model = MLP((3, 4, 2), "relu").double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(6, 2, dtype=torch.float64)
    profile = profile_model(model, x, y, loss="mse", top_k=5, lanczos_steps=0, layers="net.2")
    (layer,) = profile.layers
    with torch.no_grad():
        hidden = torch.relu(model.net[0](x))
        out = model.net[2](hidden)
    C_h = hidden.T @ hidden / 6
    G = (out - y).T @ hidden / 6
    _, _, Vh = torch.linalg.svd(G, full_matrices=False)
    expected = [float(Vh[k] @ C_h @ Vh[k]) for k in range(layer.k)]
    np.testing.assert_allclose(layer.h, expected, rtol=1e-10)


class KronQuadratic(nn.Module):
    """f = S^½ W A^½ so that ½‖f − y‖² = ½ tr((W−W*)ᵀ S (W−W*) A) with y = S^½ W* A^½."""

    def __init__(self, s_half: torch.Tensor, a_half: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(a_half.shape[0], s_half.shape[0], bias=False)
        self.register_buffer("s_half", s_half)
        self.register_buffer("a_half", a_half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.s_half @ self.lin.weight @ self.a_half).reshape(1, -1) * x


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_t5_kronecker_quadratic_exact_alpha(alpha: float) -> None:
    g = torch.Generator().manual_seed(5)
    Uo, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    Vo, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    s = torch.linspace(3, 0.5, 8, dtype=torch.float64)
    a = torch.linspace(2, 0.2, 6, dtype=torch.float64)
    sa = s[:6] * a
    e = sa ** (1 / alpha - 1)
    W_star = torch.randn(8, 6, generator=g, dtype=torch.float64)
    W = W_star + Uo[:, :6] @ torch.diag(e) @ Vo.T
    s_half = Uo @ torch.diag(s.sqrt()) @ Uo.T
    a_half = Vo @ torch.diag(a.sqrt()) @ Vo.T
    model = KronQuadratic(s_half, a_half).double()
    with torch.no_grad():
        model.lin.weight.copy_(W)
    y = (s_half @ W_star @ a_half).reshape(1, -1)
    profile = profile_model(
        model, torch.ones(1, 1, dtype=torch.float64), y, loss="mse", top_k=10, lanczos_steps=48
    )
    (layer,) = profile.layers
    assert "kfac_unavailable" in layer.flags  # the weight is used functionally: no hooks
    np.testing.assert_allclose(layer.sigma, (sa ** (1 / alpha)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.h, sa.numpy(), rtol=1e-10)
    fit = fit_exponents(np.array(layer.sigma), np.array(layer.h), min_points=3)
    assert fit.alpha == pytest.approx(alpha, abs=1e-10)
    products = np.sort(np.outer(s.numpy(), a.numpy()).ravel())[::-1]
    converged = [v for v, c in zip(layer.eigenvalues, layer.lanczos.converged, strict=True) if c]
    np.testing.assert_allclose(converged[:3], products[:3], rtol=1e-10)


def test_t10_softmax_head_rank_bound() -> None:
    torch.manual_seed(10)
    model = MLP((5, 8, 4), "tanh").double()
    x = torch.randn(50, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (50,))
    specs, _ = layer_inventory(model)
    head = next(s for s in specs if s.kind == "head")
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    grads, _ = layer_gradients(model, [batch], [head])
    G = grads[head.name]
    sv = torch.linalg.svdvals(G)
    assert float(torch.linalg.norm(G.sum(0))) / float(sv[0]) <= 1e-12
    assert float(sv[3] / sv[0]) < 1e-6
    svd = gradient_svd(G, 20, rank_cutoff=0.0, softmax_classes=4)
    assert svd.k == 3 and "head_rank_bound" in svd.flags
    profile = profile_model(model, x, y, top_k=20, lanczos_steps=0, layers=head.name)
    assert profile.layers[0].k <= 3


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_t12_layer_block_equals_ggn_for_piecewise_linear(act: str) -> None:
    torch.manual_seed(12)
    model = MLP((6, 10, 8, 4), act)
    x = torch.randn(80, 6)
    y = torch.randint(0, 4, (80,))
    profile = profile_model(model, x, y, top_k=6, lanczos_steps=0, variants=("ggn",))
    for layer in profile.layers:
        h, ggn = np.array(layer.h), np.array(layer.h_ggn)
        if act == "relu" or layer.kind == "head":
            np.testing.assert_allclose(h, ggn, rtol=1e-8, atol=1e-14)
        else:
            assert np.max(np.abs(h - ggn) / np.abs(ggn)) > 1e-4


def test_t13_ky_fan_partial_sums() -> None:
    torch.manual_seed(13)
    model = MLP((4, 5, 3), "relu")  # ReLU: every block is PSD (= GGN)
    x = torch.randn(40, 4)
    y = torch.randint(0, 3, (40,))
    profile = profile_model(model, x, y, top_k=10, lanczos_steps=60)
    for layer in profile.layers:
        h_sorted = np.sort(np.array(layer.h))[::-1]
        lam = np.array(layer.eigenvalues)[: len(h_sorted)]
        assert h_sorted[0] <= lam[0] * (1 + 1e-10)
        assert np.all(np.cumsum(h_sorted)[: len(lam)] <= np.cumsum(lam) * (1 + 1e-10) + 1e-14)


def test_undefined_numbers_are_nan_and_flagged() -> None:
    lin = nn.Linear(3, 2, bias=False)
    nn.init.zeros_(lin.weight)
    x = torch.zeros(4, 3)  # zero inputs: zero gradient
    y = torch.ones(4, 2)
    profile = profile_model(lin, x, y, loss="mse", top_k=5, lanczos_steps=3)
    (layer,) = profile.layers
    assert layer.k == 0 and layer.sigma == [] and layer.alpha is None
    assert "zero_gradient" in layer.flags
    assert math.isnan(fit_exponents(np.array([1.0, 0.5]), np.array([-1.0, -2.0])).alpha)
