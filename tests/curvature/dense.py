"""The independent reference of the engine tests: a layer block's gradient and dense float64
Hessian by ``torch.autograd.functional.hessian``, and the small models they are taken on."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call

from tests.curvature.models import MLP, PiecewiseLinearCNN, SmallCNN, TinyTransformer
from workers.curvature.gradient import GradientSVD, gradient_svd
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import make_batch, output_tensor


def dense_reference(model, x, y, loss, spec):
    """(G as m x n, dense block Hessian in the matrix's row-major vec order), float64."""
    model = model.double().eval()
    batch = make_batch(x, y, loss, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    W = params[spec.parameter]

    def loss_of(w_flat: torch.Tensor) -> torch.Tensor:
        p = {**params, spec.parameter: w_flat.reshape(W.shape)}
        return batch.loss_of_output(output_tensor(functional_call(model, p, (batch.inputs,))))

    flat = W.reshape(-1).clone()
    H = torch.autograd.functional.hessian(loss_of, flat)
    g = torch.func.grad(loss_of)(flat)
    m, n = spec.shape
    if spec.rows is not None:
        r0, r1 = spec.rows
        sl = slice(r0 * n, r1 * n)
        return g[sl].reshape(m, n), H[sl, sl]
    return g.reshape(m, n), H


CASES = {
    "mlp_tanh": (lambda: MLP((5, 7, 6, 3), "tanh"), lambda g: torch.randn(40, 5, generator=g), 3),
    "mlp_relu": (lambda: MLP((5, 7, 6, 3), "relu"), lambda g: torch.randn(40, 5, generator=g), 3),
    "mlp_gelu": (lambda: MLP((5, 7, 6, 3), "gelu"), lambda g: torch.randn(40, 5, generator=g), 3),
    "cnn": (lambda: SmallCNN(4), lambda g: torch.randn(24, 1, 6, 6, generator=g), 4),
    "cnn_relu": (  # piecewise linear in every weight in eval mode: GGN-exact
        lambda: PiecewiseLinearCNN(4).eval(),
        lambda g: torch.randn(24, 1, 4, 4, generator=g),
        4,
    ),
    "attention": (lambda: TinyTransformer(4, 3), lambda g: torch.randn(16, 5, 4, generator=g), 3),
    "attention_fused": (
        lambda: TinyTransformer(4, 3, fused=True),
        lambda g: torch.randn(16, 5, 4, generator=g),
        3,
    ),
}


def dense_top_directions(
    loss: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, k: int
) -> tuple[torch.Tensor, list[float]]:
    """(σ, h) of ``loss`` at ``weight`` (m, n): the singular values of its gradient G and
    h_k = vec(u_k v_kᵀ)ᵀ H vec(u_k v_kᵀ) for the top k, from autograd's dense Hessian."""
    grad = torch.autograd.functional.jacobian(loss, weight)
    hessian = torch.autograd.functional.hessian(loss, weight).reshape(weight.numel(), -1)
    U, S, Vh = torch.linalg.svd(grad)
    directions = [torch.outer(U[:, j], Vh[j]).reshape(-1) for j in range(k)]
    return S, [float(v @ hessian @ v) for v in directions]


def dense_compressed(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: LayerSpec, k: int
) -> tuple[GradientSVD, torch.Tensor, float]:
    """(the top-k gradient SVD, the dense M_jk = ⟨V_j, H V_k⟩, max|H|) of a layer, float64,
    under cross-entropy."""
    G, H = dense_reference(model, x, y, "cross_entropy", spec)
    svd = gradient_svd(G, k)
    flat = torch.stack([torch.outer(svd.U[:, j], svd.V[:, j]).reshape(-1) for j in range(svd.k)])
    return svd, flat @ H @ flat.T, float(H.abs().max())
