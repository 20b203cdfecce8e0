"""Seeded block Lanczos with batched products (``seeded_lanczos.py``), the batched double
backward (``hvp.BlockHessian.batched_products``) and batched GGN products (``ggn_block.py``),
against closed forms and dense float64 block Hessians (``tests/curvature/dense.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.models import MLP, MLPWith, PiecewiseLinearCNN, TinyTransformer
from tests.curvature.test_ggn_route import float64_case
from workers.curvature import layer_inventory
from workers.curvature.ggn_block import GGNBlock, ggn_block
from workers.curvature.gradient import gradient_svd
from workers.curvature.hvp import BlockHessian, block_matvec
from workers.curvature.lanczos import lanczos_top
from workers.curvature.seeded_lanczos import block_lanczos_top

F64 = torch.float64


@pytest.fixture(scope="module")
def power_law():
    """H = Q diag(k^-1.7) Qᵀ on R^600, as a block operator."""
    n = 600
    g = torch.Generator().manual_seed(1)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64)).Q
    lam = torch.arange(1, n + 1, dtype=F64) ** -1.7
    calls: list[int] = []

    def mv(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[1])
        return q @ (lam[:, None] * (q.T @ x))

    return mv, n, lam.numpy(), q, calls


@pytest.mark.parametrize("block_size", [None, 5])
def test_power_law_top20_converged_and_exact(power_law, block_size) -> None:
    mv, n, lam, _, calls = power_law
    calls.clear()
    r = block_lanczos_top(mv, n, k=20, tol=1e-8, block_size=block_size, return_vectors=True)
    assert r.n_converged == 20 and r.converged.all()
    assert np.abs(r.eigenvalues - lam[:20]).max() / lam[0] < 1e-12
    assert r.n_matvec == sum(calls) == r.steps  # every column went through the operator once
    assert max(calls) <= (22 if block_size is None else 5)  # one batched call per block
    y = r.ritz_vectors
    assert y is not None and torch.allclose(y.T @ y, torch.eye(20, dtype=F64), atol=1e-10)
    measured = (mv(y) - y * torch.from_numpy(r.eigenvalues)).norm(dim=0).numpy()
    np.testing.assert_allclose(r.residuals, measured, rtol=1e-6, atol=1e-14)
    assert (r.residuals <= 1e-8 * lam[0]).all()


def test_seeded_start_products_cost_nothing(power_law) -> None:
    """A start block with its products given is used as the first block for free."""
    mv, n, lam, q, calls = power_law
    g = torch.Generator().manual_seed(2)
    start = q[:, :20] + 0.05 * torch.randn(n, 20, generator=g, dtype=F64)
    products = mv(start)
    calls.clear()
    seeded = block_lanczos_top(mv, n, k=20, tol=1e-8, start=start, start_products=products)
    assert seeded.n_converged == 20
    assert seeded.n_matvec == sum(calls) == seeded.steps - 20
    assert np.abs(seeded.eigenvalues - lam[:20]).max() / lam[0] < 1e-12
    unseeded = block_lanczos_top(mv, n, k=20, tol=1e-8, start=start)
    assert unseeded.n_matvec == seeded.n_matvec + 20
    np.testing.assert_allclose(seeded.eigenvalues, unseeded.eigenvalues, rtol=1e-12)


def test_multiplicities_within_a_block() -> None:
    """H[X] = X C on 4 × 6: each eigenvalue of C four times; a block of 4 finds all copies,
    and the space is exhausted (24) without a breakdown error."""
    lam = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, -0.25], dtype=F64)
    g = torch.Generator().manual_seed(3)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64)).Q
    c = q @ torch.diag(lam) @ q.T

    def mv(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[1]
        return (x.T.reshape(b, 4, 6) @ c).reshape(b, 24).T

    r = block_lanczos_top(mv, 24, k=12, tol=1e-10, block_size=4)
    np.testing.assert_allclose(r.eigenvalues, np.repeat([3.0, 2.0, 1.5], 4), rtol=1e-12)
    assert r.n_converged == 12 and r.steps <= 24
    assert r.most_negative[0] == pytest.approx(-0.25, abs=1e-12)


def test_unknown_option_is_refused(power_law) -> None:
    mv, n, *_ = power_law
    with pytest.raises(TypeError, match="steps"):
        block_lanczos_top(mv, n, steps=3)  # type: ignore[call-arg]


# ------------------------------------------------- real layer blocks against dense eigh
CASES = {
    "relu_mlp": (lambda: MLP((5, 7, 6, 3), "relu"), (30, 5)),  # GGN-exact
    "piecewise_cnn": (lambda: PiecewiseLinearCNN(3), (20, 1, 4, 4)),  # GGN-exact
    "tanh_mlp": (lambda: MLP((5, 7, 6, 3), "tanh"), (30, 5)),  # smooth
    "transformer": (lambda: TinyTransformer(4, 3), (16, 5, 4)),  # LayerNorm, GELU, softmax
}


def _seed(G: torch.Tensor, spec, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, V, vec(u_k v_kᵀ) as columns) of the top-k gradient directions."""
    svd = gradient_svd(G, k)
    cols = torch.stack(
        [torch.outer(svd.U[:, j], svd.V[:, j]).reshape(-1) for j in range(svd.k)], dim=1
    )
    return svd.U, svd.V, cols


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_double_backward_block_lanczos_matches_dense(case: str) -> None:
    model, x, y, batch, specs = float64_case(*CASES[case], "cross_entropy")
    for spec in specs[:3]:
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        dense = np.linalg.eigvalsh(0.5 * (H + H.T).numpy())[::-1]
        micro = batch.split(x.shape[0] // 2 + 1)  # two micro-batches add up exactly
        block = BlockHessian(model, micro, spec.parameter)
        mv = block_matvec(block.batched_products, spec, block.weight)
        X = torch.randn(H.shape[0], 3, dtype=F64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(mv(X), H @ X, rtol=0, atol=1e-12 * float(H.abs().max()))
        k = min(5, H.shape[0])
        _, _, start = _seed(G, spec, k)
        r = block_lanczos_top(mv, H.shape[0], k=k, tol=1e-10, start=start, start_products=H @ start)
        assert r.n_converged == k
        np.testing.assert_allclose(r.eigenvalues, dense[:k], rtol=0, atol=1e-10 * dense[0])


@pytest.mark.parametrize("traced", [True, False])  # rank-1 layer route / full weight tangent
@pytest.mark.parametrize("case", ["relu_mlp", "piecewise_cnn"])
def test_ggn_block_products_equal_dense_hessian_products(case: str, traced: bool) -> None:
    model, x, y, batch, specs = float64_case(*CASES[case], "cross_entropy")
    if not traced:
        specs = layer_inventory(model)[0]
    for spec in specs:
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        U, V, start = _seed(G, spec, 3)
        op = ggn_block(model, batch.split(x.shape[0] // 2 + 1), spec, U, V)
        assert isinstance(op, GGNBlock), op
        assert (op.module is not None) == traced
        weight = dict(model.named_parameters())[spec.parameter]
        mv = block_matvec(op.products, spec, weight)
        X = torch.randn(H.shape[0], 4, dtype=F64, generator=torch.Generator().manual_seed(1))
        scale = float(H.abs().max())
        torch.testing.assert_close(mv(X), H @ X, rtol=0, atol=1e-12 * scale)
        k = min(5, H.shape[0])
        dense = np.linalg.eigvalsh(0.5 * (H + H.T).numpy())[::-1]
        r = block_lanczos_top(mv, H.shape[0], k=k, tol=1e-10, start=start)
        np.testing.assert_allclose(r.eigenvalues, dense[:k], rtol=0, atol=1e-10 * dense[0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLP((5, 7, 6, 3), "tanh"),
        lambda: MLP((5, 7, 6, 3), "gelu"),
        lambda: MLPWith(torch.nn.LayerNorm(6)),
        lambda: MLPWith(torch.nn.Softmax(dim=-1)),
    ],
    ids=["tanh", "gelu", "layernorm", "softmax"],
)
def test_ggn_block_is_refused_on_smooth_blocks(make) -> None:
    model, x, y, batch, specs = float64_case(make, (30, 5), "cross_entropy")
    G, _ = dense_reference(model, x, y, "cross_entropy", specs[0])
    U, V, _ = _seed(G, specs[0], 3)
    assert isinstance(ggn_block(model, [batch], specs[0], U, V), str)


def test_block_agrees_with_single_vector_lanczos_top(power_law) -> None:
    mv, n, *_ = power_law
    single = lanczos_top(lambda v: mv(v[:, None])[:, 0], n, k=20, tol=1e-8)
    block = block_lanczos_top(mv, n, k=20, tol=1e-8, block_size=4)
    np.testing.assert_allclose(block.eigenvalues, single.eigenvalues, rtol=1e-10)
