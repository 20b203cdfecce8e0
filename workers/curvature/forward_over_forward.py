"""Exact h_k on a smooth layer, forward over forward in the layer's output (docs/engine.md).

For a single-use ``nn.Linear`` or ungrouped convolution, z = A(W) + b is linear in W, so with
the rank-1 output tangents dz_k = A(u_k v_kᵀ) of ``ggn_output.output_tangents``

    h_k = ⟨V_k, H[V_k]⟩ = d²/dt² φ(z + t·dz_k) |_{t=0},    φ = L ∘ g,

with g the rest of the network (``ggn_output.rest_of_network``). The second directional
derivative is one jvp of a jvp of φ, vmapped over the K directions around one shared primal:
no graph is stored, unlike the double backward. It gives h_k alone (no M, no ‖H[V_k]‖).

torch's forward-over-forward through the native ``layer_norm`` is wrong (its second
directional derivative measured 13–130% off), so inside this route ``F.layer_norm`` (which
``nn.LayerNorm`` calls) is replaced by its decomposition: mean, centre, rsqrt of the
variance, scale, shift (``decomposed_layer_norm``), exact under any order of AD.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import jvp, vmap

from workers.curvature.ggn_output import (
    capture_layer_io,
    output_tangents,
    rank_one_directions,
    rest_of_network,
)
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch


def decomposed_layer_norm(
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """(x − μ) · rsqrt(σ² + eps) · weight + bias over the last ``len(normalized_shape)``
    dimensions (σ² the biased variance), as ``F.layer_norm``, from elementary ops."""
    dims = tuple(range(-len(normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    out = centred * torch.rsqrt(centred.square().mean(dim=dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


@contextmanager
def decomposed_layer_norms() -> Iterator[None]:
    """``torch.nn.functional.layer_norm`` (and so every ``nn.LayerNorm``) decomposed while
    the block runs."""
    native = nn.functional.layer_norm
    nn.functional.layer_norm = decomposed_layer_norm  # type: ignore[assignment]
    try:
        yield
    finally:
        nn.functional.layer_norm = native


def forward_over_forward_curvature(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> torch.Tensor | None:
    """h_k (K,) float64, summed over micro-batches; None unless the layer is a single-use
    linear or convolution layer."""
    layer = rank_one_directions(model, spec, U, V)
    if layer is None:
        return None
    h = torch.zeros(U.shape[1], dtype=torch.float64, device=layer.weight.device)
    with torch.no_grad(), decomposed_layer_norms():
        for batch in micro_batches:
            a, z = capture_layer_io(model, layer.module, batch)
            rest = rest_of_network(model, layer.module, batch)

            def phi(zz: torch.Tensor, batch: Batch = batch, rest: Any = rest) -> torch.Tensor:
                return batch.loss_of_output(rest(zz))

            def second(t: torch.Tensor, phi: Any = phi, z: torch.Tensor = z) -> torch.Tensor:
                def first(zz: torch.Tensor) -> torch.Tensor:
                    slope: torch.Tensor = jvp(phi, (zz,), (t,))[1]
                    return slope

                out: torch.Tensor = jvp(first, (z,), (t,))[1]
                return out

            dz = output_tangents(layer.module, a, layer.u, layer.v)
            h += vmap(second)(dz).to(torch.float64)
    return h
