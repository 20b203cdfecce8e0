"""The layer gradient G and its top-K singular triplets: against autograd on the whole batch,
micro-batches, the rank cut-off, the softmax rank bound and a zero gradient."""

from __future__ import annotations

import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.models import tanh_mlp_batch
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch


@pytest.mark.parametrize("micro", [None, 4])
def test_layer_gradients_equal_autograd_in_micro_batches(micro: int | None) -> None:
    model, x, y = tanh_mlp_batch()
    specs = layer_inventory(model)[0]
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    grads, _ = layer_gradients(model, batch.split(micro), specs)
    for spec in specs:
        G, _ = dense_reference(model, x, y, "cross_entropy", spec)
        torch.testing.assert_close(grads[spec.name], G, rtol=1e-12, atol=1e-15)


def test_gradient_svd_cut_off_bound_and_zero() -> None:
    g = torch.Generator().manual_seed(2)
    A, B = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(3, 5, generator=g, dtype=torch.float64),
    )
    G = A @ B  # rank 3
    svd = gradient_svd(G, 10)
    S = torch.linalg.svdvals(G)
    assert svd.rank_num == 3 and svd.k == 3 and svd.flags == ()
    torch.testing.assert_close(svd.sigma, S[:3], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(svd.U @ torch.diag(svd.sigma) @ svd.V.T, G, rtol=1e-10, atol=1e-12)
    assert gradient_svd(G, 2).k == 2
    bounded = gradient_svd(G, 10, softmax_classes=3)
    assert bounded.rank_num == 2 and "head_rank_bound" in bounded.flags
    zero = gradient_svd(torch.zeros(4, 3, dtype=torch.float64), 5)
    assert zero.k == 0 and zero.flags == ("zero_gradient",)
    krylov = gradient_svd(G, 2, method="krylov")
    torch.testing.assert_close(krylov.sigma, S[:2], rtol=1e-10, atol=0.0)
