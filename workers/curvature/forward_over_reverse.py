"""Exact h_k on any twice-differentiable layer, forward-over-reverse in the layer's output
(docs/engine.md).

For a single-use ``nn.Linear`` or ungrouped convolution, z = A(W) + b is linear in W, so the
layer-block Hessian is H[V] = (∂z/∂W)ᵀ H_z (∂z/∂W) V exactly, whatever lies above the layer
(tanh, GELU, LayerNorm, softmax): H_z = ∇²_z L(g(z)) with g the rest of the network. With the
rank-1 output tangents dz_k of ``ggn_output.output_tangents``,

    h_k = ⟨dz_k, H_z dz_k⟩,    M_jk = ⟨dz_j, H_z dz_k⟩,

and all K products H_z dz_k come from one ``vmap`` of ``jvp(grad_z L∘g)`` (forward over
reverse, exact through torch's native layer norm, unlike forward over forward). The GGN
route drops the second-order term of g; this one keeps it, so it needs no structural proof.
It gives h_k and M alone (no ‖H[V_k]‖); None for any other layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from workers.curvature.ggn_output import (
    capture_layer_io,
    output_tangents,
    rank_one_directions,
    rest_of_network,
)
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch
from workers.curvature.output_space import output_space_matrix


def _output_hessian_products(
    model: nn.Module, module: nn.Module, batch: Batch, z: torch.Tensor, tangents: torch.Tensor
) -> torch.Tensor:
    """H_z t for each of the K output tangents t (K, *z.shape)."""
    rest = rest_of_network(model, module, batch)
    grad_z = grad(lambda zz: batch.loss_of_output(rest(zz)))

    def one(t: torch.Tensor) -> Any:
        return jvp(grad_z, (z,), (t,))[1]

    products: torch.Tensor = vmap(one)(tangents)
    return products


def forward_over_reverse_curvature(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(h_k (K,), M (K, K)) in float64, summed over micro-batches; None unless the layer is a
    single-use linear or convolution layer."""
    layer = rank_one_directions(model, spec, U, V)
    if layer is None:
        return None
    module, weight, u, v = layer.module, layer.weight, layer.u, layer.v
    K = U.shape[1]
    h = torch.zeros(K, dtype=torch.float64, device=weight.device)
    M = h.new_zeros((K, K))
    with torch.no_grad():
        for batch in micro_batches:
            a, z = capture_layer_io(model, module, batch)
            dz = output_tangents(module, a, u, v)
            Hdz = _output_hessian_products(model, module, batch, z, dz)
            h += (dz * Hdz).flatten(1).sum(1).to(torch.float64)
            M += output_space_matrix(dz, Hdz)
    return h, M
