"""Products from the held layer-output Jacobian (``ggn_jacobian.py``) against dense float64
block Hessians (``tests/curvature/dense.py``), over several micro-batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.curvature.dense import dense_reference
from tests.curvature.test_ggn_route import float64_case
from tests.curvature.test_seeded_lanczos import CASES
from workers.curvature import ggn_jacobian
from workers.curvature.ggn_jacobian import _LinearHeld, jacobian_ggn
from workers.curvature.ggn_output import layer_ggn_products
from workers.curvature.ggn_route import per_example_loss_hessian
from workers.curvature.hvp import block_matvec
from workers.curvature.lanczos import lanczos
from workers.curvature.measurement import make_batch
from workers.curvature.output_jacobians import LayerJacobians

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


class StridedPositions(nn.Module):
    """A strided, dilated Conv1d (6 output positions), a Linear over those positions, ReLUs
    and a 3-output head: GGN-exact, and S = 6 = 2C in both of the first two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, stride=2, padding=2, dilation=2)
        self.per_position = nn.Linear(3, 4)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).transpose(1, 2)  # (B, 6, 3)
        return self.head(torch.relu(self.per_position(h)).flatten(1))


@pytest.mark.parametrize("explicit", [True, False])
def test_products_from_the_explicit_jacobian_equal_dense(
    explicit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P = ∂f_{b,c}/∂W built from the identity filter bank, on a strided dilated Conv1d and a
    Linear over positions; and the layer-map path it replaces on the same layers."""
    if not explicit:
        monkeypatch.setattr(ggn_jacobian, "explicit_jacobian", lambda *_: None)
    model, x, y, batch, specs = float64_case(StridedPositions, (12, 2, 11), "cross_entropy")
    for spec in specs[:2]:
        _, H = dense_reference(model, x, y, "cross_entropy", spec)
        op = jacobian_ggn(model, batch.split(5), spec)
        assert op is not None and op.explicit is explicit, spec.name
        X = torch.randn(H.shape[0], 3, dtype=F64, generator=torch.Generator().manual_seed(4))
        got = block_matvec(op.products, spec, op.weight)(X)
        torch.testing.assert_close(got, H @ X, rtol=0, atol=1e-12 * float(H.abs().max()))


def test_refused_over_the_memory_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _, batch, specs = float64_case(*CASES["relu_mlp"], "cross_entropy")
    monkeypatch.setattr(ggn_jacobian, "MAX_ELEMENTS", 1)
    assert jacobian_ggn(model, [batch], specs[0]) is None


def _directions(m: int, n: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    U = torch.linalg.qr(torch.randn(m, K, dtype=F64, generator=g))[0]
    V = torch.linalg.qr(torch.randn(n, K, dtype=F64, generator=g))[0]
    return U, V


@pytest.mark.parametrize("chunk", [None, 4])
def test_the_h_k_steps_jacobians_serve_the_products(
    chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G kept by the GGN route (C = 3 < K reverse passes, in chunks of examples, over three
    micro-batches) gives the dense block Hessian's products with no reverse pass of its own."""
    model, x, y, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    micro = batch.split(x.shape[0] // 3 + 1)
    for spec in specs:
        _, H = dense_reference(model, x, y, "cross_entropy", spec)
        m, n = spec.shape
        U, V = _directions(m, n, min(m, n, 4))
        route = layer_ggn_products(
            model, micro, spec, U, V, reverse_below=10, chunk=chunk, keep_jacobians=10**9
        )
        assert len(route.jacobians) == len(micro), spec.name
        with monkeypatch.context() as patched:
            patched.setattr(ggn_jacobian, "output_jacobian", _no_reverse_pass)
            op = jacobian_ggn(model, micro, spec, known=route.jacobians)
        assert op is not None
        X = torch.randn(m * n, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
        got = block_matvec(op.products, spec, op.weight)(X)
        torch.testing.assert_close(got, H @ X, rtol=0, atol=1e-12 * float(H.abs().max()))


def test_no_jacobian_is_kept_over_the_bound_or_without_reverse_passes() -> None:
    model, x, _, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    spec = specs[0]
    U, V = _directions(*spec.shape, 2)
    micro = batch.split(x.shape[0] // 2)
    kept = layer_ggn_products(model, micro, spec, U, V, reverse_below=10, keep_jacobians=10**9)
    elements = sum(j.G.numel() for j in kept.jacobians)
    over = layer_ggn_products(
        model, micro, spec, U, V, reverse_below=10, keep_jacobians=elements - 1
    )
    forward = layer_ggn_products(model, micro, spec, U, V, reverse_below=0, keep_jacobians=10**9)
    assert len(kept.jacobians) == 2 and over.jacobians == [] and forward.jacobians == []


def _no_reverse_pass(*_args: object) -> None:
    raise AssertionError("the operator took its own reverse passes")


def test_linear_layers_take_the_lean_products_with_a_per_example_loss() -> None:
    """On the ReLU MLP every part of every layer is the five-matmul form (checked against
    dense above); a loss that couples the examples keeps the autograd loss-Hessian products
    and still gives the dense block Hessian's."""
    model, x, y, batch, specs = float64_case(*CASES["relu_mlp"], "cross_entropy")
    for spec in specs:
        op = jacobian_ggn(model, batch.split(11), spec)
        assert op is not None and all(isinstance(p, _LinearHeld) for p in op._held), spec.name

    def coupled(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (out.mean(0) ** 2).sum() + torch.nn.functional.cross_entropy(out, targets)

    coupled_batch = make_batch(x, y, "custom", dtype=F64, loss_fn=coupled)
    assert per_example_loss_hessian(coupled_batch, model(x)) is None
    spec = specs[1]
    op = jacobian_ggn(model, [coupled_batch], spec)
    assert op is not None and not any(isinstance(p, _LinearHeld) for p in op._held)
    params = {k: v.detach() for k, v in model.named_parameters()}
    W = params[spec.parameter]

    def loss_of(w_flat: torch.Tensor) -> torch.Tensor:
        p = {**params, spec.parameter: w_flat.reshape(W.shape)}
        return coupled(torch.func.functional_call(model, p, (x,)), y)

    H = torch.autograd.functional.hessian(loss_of, W.reshape(-1).clone())
    X = torch.randn(H.shape[0], 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    got = block_matvec(op.products, spec, op.weight)(X)
    torch.testing.assert_close(got, H @ X, rtol=0, atol=1e-12 * float(H.abs().max()))


def test_a_convolution_with_few_positions_takes_its_patches_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """conv2 (S = 4 < 2C): products as five matrix products of its patches, and through the
    layer map when the patches would exceed the bound; both equal dense."""
    model, x, y, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    spec = specs[1]
    _, H = dense_reference(model, x, y, "cross_entropy", spec)
    asker = LayerJacobians.for_profile(model, [batch], specs).asker(spec)
    assert asker is not None
    known = asker()
    X = torch.randn(H.shape[0], 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    for bound, kind in [(ggn_jacobian.MAX_ELEMENTS, _LinearHeld), (0, ggn_jacobian._Held)]:
        monkeypatch.setattr(ggn_jacobian, "MAX_ELEMENTS", bound)
        op = jacobian_ggn(model, [batch], spec, known=known)
        assert op is not None and all(isinstance(p, kind) for p in op._held), kind
        got = block_matvec(op.products, spec, op.weight)(X)
        torch.testing.assert_close(got, H @ X, rtol=0, atol=1e-12 * float(H.abs().max()))
