"""GGN products of a GGN-exact layer block from the held layer-output Jacobian
(docs/engine.md, step 6).

On a GGN-exact single-use ``nn.Linear`` / ungrouped convolution (``ggn_output.rank_one_layer``;
``routes.ggn_decision`` decides) whose model has C outputs per example, one vmapped VJP per
micro-batch gives G (C, *z.shape), G[c, b] = ∂f_{b,c}/∂z_b (``ggn_reverse.output_jacobian``).
With A: W ↦ z the layer map and A* its adjoint,

    H[X] = A*( Gᵀ H_L G A(X) ),   (G dz)_{b,c} = ⟨G[c, b], dz_b⟩,   (Gᵀ y)_b = Σ_c y_{b,c} G[c, b],

so a product costs one layer-map application, two contractions with G, the loss-Hessian product
(``ggn_route.loss_hessian_products``) and the adjoint: no pass through the network.
Micro-batches add exactly. G is held for every micro-batch: C·B·numel(z_b) elements in all,
refused (``jacobian_ggn`` returns None) above ``MAX_ELEMENTS`` or for C > ``MAX_OUTPUTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import vjp, vmap

from workers.curvature.ggn_output import (
    capture_layer_io,
    layer_map,
    rank_one_layer,
    rest_of_network,
)
from workers.curvature.ggn_reverse import OutputJacobian, output_jacobian
from workers.curvature.ggn_route import loss_hessian_products
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch

MAX_ELEMENTS = 2**26  # of all held G together
MAX_OUTPUTS = 64  # C above this: the network's own products are cheaper


@dataclass
class _Held:
    """One micro-batch: its output f, G (C, B, numel(z_b)), the layer map and its adjoint."""

    batch: Batch
    out: torch.Tensor
    G: torch.Tensor
    to_z: Callable[[torch.Tensor], torch.Tensor]
    adjoint: Callable[[torch.Tensor], Any]
    z_shape: torch.Size


class JacobianGGN:
    """X (b, *W.shape) ↦ H[X_i] (b, *W.shape) from the held G; build with ``jacobian_ggn``."""

    def __init__(self, weight: torch.Tensor, held: list[_Held]) -> None:
        self.weight, self._held = weight, held
        self.n_products = 0

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        """H[X_i] for the stack ``directions`` (b, *W.shape), summed over micro-batches."""
        b = directions.shape[0]
        out = torch.zeros_like(directions)
        with torch.no_grad():
            for part in self._held:
                B = part.z_shape[0]
                dz = part.to_z(directions).reshape(b, B, -1)
                Jx = torch.einsum("cbz,ibz->ibc", part.G, dz).reshape(b, *part.out.shape)
                HJx = loss_hessian_products(part.batch, part.out, Jx).reshape(b, B, -1)
                pulled = torch.einsum("ibc,cbz->ibz", HJx, part.G).reshape(b, *part.z_shape)
                (hx,) = part.adjoint(pulled)
                out += hx
        self.n_products += b
        return out

    def release(self) -> None:
        self._held.clear()


def pays_off(model: nn.Module, spec: LayerSpec) -> bool:
    """Whether the engine's eigen step should hold G for this layer: on convolutions only.
    On an ``nn.Linear`` the layer map and its adjoint cost B·m·n per product, as much as
    the reused-graph double backward of a dense network (measured on the bench's MLP, B = 1024:
    20 Lanczos steps in 0.159 s from G against 0.117 s by the double backward; on its CNN,
    B = 256, 3.3 s against 7.6 s; docs/benchmarks.md)."""
    return isinstance(rank_one_layer(model, spec), nn.modules.conv._ConvNd)


def jacobian_ggn(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    known: list[OutputJacobian] | None = None,
) -> JacobianGGN | None:
    """The operator for a layer whose block is already known to be GGN-exact, or None where
    the layer is not a single-use linear/convolution, C > ``MAX_OUTPUTS``, the output has no
    example dimension first, or all G would exceed ``MAX_ELEMENTS`` (callers fall back to
    ``hvp.BlockHessian``). ``known``: every micro-batch's G as the h_k step already took it
    (``ggn_output.layer_ggn_products(keep_jacobians=...)``); then no reverse pass is taken."""
    module = rank_one_layer(model, spec)
    if module is None:
        return None
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    parts = known if known is not None and len(known) == len(micro_batches) else None
    if parts is None:
        parts = []
        total = 0
        with torch.no_grad():
            for batch in micro_batches:
                a, z = capture_layer_io(model, module, batch)
                found = output_jacobian(rest_of_network(model, module, batch), z, MAX_OUTPUTS)
                if found is None:
                    return None
                total += found[1].numel()
                if total > MAX_ELEMENTS:
                    return None
                parts.append(OutputJacobian(batch, a, *found))
    held: list[_Held] = []
    for part in parts:
        layer = layer_map(module, part.a)
        G = part.G
        held.append(
            _Held(part.batch, part.out, G.reshape(G.shape[0], G.shape[1], -1), vmap(layer),
                  vmap(vjp(layer, weight)[1]), G.shape[1:])
        )  # fmt: skip
    return JacobianGGN(weight, held)
