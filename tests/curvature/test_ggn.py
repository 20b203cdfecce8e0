"""h^GGN along rank-one directions against the dense Gauss-Newton matrix JᵀΛJ (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev

from tests.curvature.models import MLP
from workers.curvature.ggn import ggn_curvature
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch


def _dense_ggn(model, x, y, loss, parameter):
    params = {k: v.detach() for k, v in model.named_parameters()}
    W = params[parameter]
    n = x.shape[0]

    def outputs(w: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, parameter: w.reshape(W.shape)}, (x,))

    out = outputs(W.reshape(-1))
    J = jacrev(outputs)(W.reshape(-1))  # (n, C, m·n)
    if loss == "mse":
        lam = torch.eye(out.shape[1], dtype=torch.float64).expand(n, -1, -1)
    else:
        p = torch.softmax(out, dim=-1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ica,icd,idb->ab", J, lam, J) / n


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_curvature_equals_the_dense_gauss_newton_matrix(loss: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = MLP((4, 5, 3), "tanh").double().eval()
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = (
        torch.randint(0, 3, (8,), generator=g)
        if loss == "cross_entropy"
        else torch.randn(8, 3, generator=g, dtype=torch.float64)
    )
    batch = make_batch(x, y, loss, dtype=torch.float64)
    spec = next(s for s in layer_inventory(model)[0] if s.name == "net.0")
    grads, _ = layer_gradients(model, [batch], [spec])
    svd = gradient_svd(grads[spec.name], 4)
    h = ggn_curvature(model, batch.split(3), spec, svd.U, svd.V)
    GGN = _dense_ggn(model, x, y, loss, spec.parameter)
    dirs = [torch.outer(svd.U[:, k], svd.V[:, k]).reshape(-1) for k in range(svd.k)]
    torch.testing.assert_close(h, torch.stack([d @ GGN @ d for d in dirs]), rtol=1e-10, atol=1e-14)
