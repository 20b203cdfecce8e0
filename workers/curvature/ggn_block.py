"""Batched GGN products of a GGN-exact layer block, for the eigensolver (docs/engine.md, step 6).

On a layer whose block equals its Gauss–Newton part (``piecewise_linear.py`` proves it,
``ggn_route.numerically_ggn`` confirms it; ``routes.ggn_refusal`` is the decision)

    H[X] = Jᵀ H_L J X    for any weight-shaped X (not only rank-1),

so a block X_1..X_b costs one vmapped JVP, one vmapped loss-Hessian product and one vmapped
VJP, with no double backward. On a single-use ``nn.Linear`` / ungrouped convolution
(``ggn_output.rank_one_layer``) the JVP starts at the layer output z = A(W):
dz_i = A(X_i), J_g dz_i through the rest of the network g, and H[X_i] = A*(J_gᵀ H_L J_g dz_i)
(A* the adjoint of the layer map); elsewhere the full weight tangent goes through the model.
The pullbacks (``vjp`` closures, one primal each) are built once per micro-batch and reused
for every block. Micro-batches add exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from workers.curvature.ggn_output import capture_layer_io, rank_one_layer, rest_of_network
from workers.curvature.ggn_reverse import layer_map
from workers.curvature.ggn_route import loss_hessian_products, output_function
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch
from workers.curvature.routes import ggn_refusal

Tensors = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Linearised:
    """One micro-batch: x ↦ (f, J x) and the pullback y ↦ Jᵀ y, where x is the tangent of
    the layer output (rank-1 route) or of the weight; ``to_x`` maps a weight tangent to x and
    ``from_x`` pulls an x-cotangent back to the weight (identity on the weight route)."""

    batch: Batch
    tangent: Callable[[torch.Tensor], Any]
    pullback: Callable[[torch.Tensor], Any]
    to_x: Tensors
    from_x: Callable[[torch.Tensor], Any] | None


class GGNBlock:
    """X (b, *W.shape) ↦ H[X_i] = Jᵀ H_L J X_i (b, *W.shape) on a GGN-exact layer block."""

    def __init__(self, model: nn.Module, micro_batches: list[Batch], spec: LayerSpec) -> None:
        self.model, self.micro_batches, self.spec = model, micro_batches, spec
        self.module = rank_one_layer(model, spec)
        self._parts: list[_Linearised] = []
        self.n_products = 0

    def _linearise(self, batch: Batch) -> _Linearised:
        if self.module is None:
            outputs, weight = output_function(self.model, batch, self.spec.parameter)
            return _Linearised(
                batch,
                lambda t: jvp(outputs, (weight,), (t,)),
                vjp(outputs, weight)[1],
                lambda x: x,
                None,
            )
        a, z = capture_layer_io(self.model, self.module, batch)
        rest = rest_of_network(self.model, self.module, batch)
        layer = layer_map(self.module, a)
        w: torch.Tensor = self.module.weight  # type: ignore[assignment]
        return _Linearised(
            batch,
            lambda t: jvp(rest, (z,), (t,)),
            vjp(rest, z)[1],
            vmap(layer),
            vmap(vjp(layer, w)[1]),
        )

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        """H[X_i] for the stack ``directions`` (b, *W.shape), summed over micro-batches."""
        if not self._parts:
            self._parts = [self._linearise(b) for b in self.micro_batches]
        out = torch.zeros_like(directions)
        with torch.no_grad():
            for part in self._parts:
                x = part.to_x(directions)
                f, Jx = vmap(part.tangent, out_dims=(None, 0))(x)  # type: ignore[arg-type]
                (pulled,) = vmap(part.pullback)(loss_hessian_products(part.batch, f, Jx))
                if part.from_x is not None:
                    (pulled,) = part.from_x(pulled)
                out += pulled
        self.n_products += directions.shape[0]
        return out

    def release(self) -> None:
        self._parts.clear()


def ggn_block(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
) -> GGNBlock | str:
    """The batched GGN operator when ``routes.ggn_refusal`` finds the block GGN-exact (checked
    on the directions U, V), else the refusal's reason."""
    reason = ggn_refusal(model, micro_batches, spec, U, V)
    return reason if reason is not None else GGNBlock(model, micro_batches, spec)
