"""Generalised Gauss–Newton curvature along given directions (docs/engine.md).

h_k^GGN = (1/N) Σ_i (J_i X)ᵀ Λ_i (J_i X) with J_i X = d f(x_i; W + εX)/dε (one forward-mode
``jvp`` of the outputs) and Λ_i the Hessian of the loss in the outputs:
softmax cross-entropy Λ = diag(p) − ppᵀ, so (Jx)ᵀΛ(Jx) = Σ_c p_c (Jx)_c² − (Σ_c p_c (Jx)_c)²;
``mse`` (½‖f − y‖²) Λ = I; ``lm`` per predicted token. N is the loss normaliser.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp

from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import IGNORE_INDEX, Batch, output_tensor


def _output_quadratic(mb: Batch, out: torch.Tensor, jx: torch.Tensor) -> torch.Tensor:
    if mb.loss_fn is not None or mb.loss == "model":
        raise NotImplementedError("GGN needs a known output Hessian (not a custom loss)")
    if mb.loss == "mse":
        return (jx * jx).sum()
    logits = out.reshape(-1, out.shape[-1])
    tangent = jx.reshape(-1, jx.shape[-1])
    p = torch.softmax(logits, dim=-1)
    q = (p * tangent * tangent).sum(-1) - (p * tangent).sum(-1) ** 2
    if mb.loss == "lm":
        q = q * (mb.targets.reshape(-1) != IGNORE_INDEX)
    return q.sum()


def ggn_curvature(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> torch.Tensor:
    """h_k^GGN for the K paired columns of U (m,K) and V (n,K), float64."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    weight = params[spec.parameter]
    K = U.shape[1]
    total = torch.zeros(K, dtype=torch.float64)
    for mb in micro_batches:

        def outputs(w: torch.Tensor, mb: Batch = mb) -> torch.Tensor:
            kwargs = mb.forward_kwargs(model)
            state = {**params, spec.parameter: w, **buffers}
            return output_tensor(functional_call(model, state, (mb.inputs,), kwargs))

        for k in range(K):
            tangent = spec.embed(torch.outer(U[:, k], V[:, k]).to(weight.dtype))
            out, jx = jvp(outputs, (weight,), (tangent,))[:2]
            total[k] += float(_output_quadratic(mb, out.detach(), jx.detach()))
    return total / micro_batches[0].normaliser
