"""Forward-over-forward h_k in the layer output against dense float64 Hessians, on smooth and
piecewise-linear models (tanh, GELU, LayerNorm, softmax attention above the layer)."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp

from tests.curvature.test_forward_over_reverse import (  # the same smooth and residual models
    MODELS,
    every_layer_against_dense,
)
from workers.curvature.forward_over_forward import (
    decomposed_layer_norm,
    decomposed_layer_norms,
    forward_over_forward_curvature,
)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_forward_over_forward_equals_the_dense_block_hessian(case: str) -> None:
    for h, M_ref, scale in every_layer_against_dense(case, forward_over_forward_curvature):
        torch.testing.assert_close(h, torch.diagonal(M_ref), rtol=0, atol=1e-12 * scale)


def test_native_layer_norm_is_not_on_the_forward_over_forward_path() -> None:
    """Inside the route ``nn.LayerNorm`` runs decomposed, and the decomposition's second
    directional derivative equals the double backward's (the native one's need not)."""
    calls: list[int] = []
    norm = torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.randn_like(x)
    c = torch.randn_like(x)

    def phi(z: torch.Tensor) -> torch.Tensor:
        return (norm(z) * c).sum()

    with decomposed_layer_norms():
        original = torch.nn.functional.layer_norm
        torch.nn.functional.layer_norm = lambda *a, **kw: calls.append(1) or original(*a, **kw)  # type: ignore[assignment,func-returns-value]
        try:
            fof = jvp(lambda z: jvp(phi, (z,), (t,))[1], (x,), (t,))[1]
        finally:
            torch.nn.functional.layer_norm = original
    assert calls and torch.nn.functional.layer_norm is not decomposed_layer_norm
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(phi(z), z, create_graph=True)
    (hz,) = torch.autograd.grad(g, z, grad_outputs=t)
    torch.testing.assert_close(fof, (hz * t).sum(), rtol=1e-12, atol=0)
