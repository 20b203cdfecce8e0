"""Forward-over-reverse h_k in the layer output against dense float64 Hessians, on smooth and
piecewise-linear models (tanh, GELU, LayerNorm, softmax attention above the layer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.curvature.dense import dense_compressed
from tests.curvature.models import MLP, MLPWith, PiecewiseLinearCNN, SmallCNN, TinyTransformer
from tests.curvature.test_ggn_route import float64_case
from workers.curvature.forward_over_reverse import forward_over_reverse_curvature

MODELS = {
    "tanh_mlp": (lambda: MLP((5, 7, 6, 3), "tanh"), (24, 5)),
    "layer_norm_mlp": (lambda: MLPWith(torch.nn.LayerNorm(6)), (24, 5)),
    "tanh_cnn": (lambda: SmallCNN(3), (12, 1, 6, 6)),
    "transformer": (lambda: TinyTransformer(4, 3), (10, 5, 4)),
    "residual_cnn": (lambda: PiecewiseLinearCNN(3), (12, 1, 4, 4)),
}


def every_layer_against_dense(
    case: str, curvature: Callable[..., Any]
) -> list[tuple[Any, torch.Tensor, float]]:
    """(the route's output, the dense float64 M_jk, its scale) for every layer of
    ``MODELS[case]``, the route run on two micro-batches; each layer must take the route."""
    model, x, y, batch, specs = float64_case(*MODELS[case], "cross_entropy")
    rows = []
    for spec in specs:
        svd, M_ref, scale = dense_compressed(model, x, y, spec, 4)
        out = curvature(model, batch.split(x.shape[0] // 2 + 1), spec, svd.U, svd.V)
        assert out is not None, spec.name
        rows.append((out, M_ref, scale))
    assert len(rows) == len(specs)
    return rows


@pytest.mark.parametrize("case", sorted(MODELS))
def test_forward_over_reverse_equals_the_dense_block_hessian(case: str) -> None:
    for (h, M), M_ref, scale in every_layer_against_dense(case, forward_over_reverse_curvature):
        torch.testing.assert_close(h, torch.diagonal(M_ref), rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(M, M_ref, rtol=0, atol=1e-12 * scale)
