"""GGN products of a GGN-exact layer block from the held layer-output Jacobian
(docs/engine.md, step 6).

On a GGN-exact single-use ``nn.Linear`` / ungrouped convolution (``ggn_output.rank_one_layer``;
``routes.ggn_decision`` decides) whose model has C outputs per example, one vmapped VJP per
micro-batch gives G (C, *z.shape), G[c, b] = ∂f_{b,c}/∂z_b (``ggn_reverse.output_jacobian``).
With A: W ↦ z the layer map and A* its adjoint,

    H[X] = A*( Gᵀ H_L G A(X) ),   (G dz)_{b,c} = ⟨G[c, b], dz_b⟩,   (Gᵀ y)_b = Σ_c y_{b,c} G[c, b],

so a product costs one layer-map application, two contractions with G, the loss-Hessian product
(``ggn_route.loss_hessian_products``) and the adjoint: no pass through the network. Where the
layer output has S ≥ 2C positions per example, the rows of J = G ∘ A are held instead,
P (B·C, numel(W)) (``ggn_reverse.explicit_jacobian``), and H[X] = Pᵀ H_L (P vec X).
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

from workers.curvature.ggn_output import capture_layer_io, rank_one_layer, rest_of_network
from workers.curvature.ggn_reverse import (
    OutputJacobian,
    explicit_jacobian,
    layer_map,
    layer_sizes,
    output_jacobian,
    position_major,
)
from workers.curvature.ggn_route import loss_hessian_products, per_example_loss_hessian
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

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        b, B = directions.shape[0], self.z_shape[0]
        dz = self.to_z(directions).reshape(b, B, -1)
        Jx = torch.einsum("cbz,ibz->ibc", self.G, dz).reshape(b, *self.out.shape)
        HJx = loss_hessian_products(self.batch, self.out, Jx).reshape(b, B, -1)
        pulled = torch.einsum("ibc,cbz->ibz", HJx, self.G).reshape(b, *self.z_shape)
        (hx,) = self.adjoint(pulled)
        hx_tensor: torch.Tensor = hx
        return hx_tensor


@dataclass
class _Explicit:
    """One micro-batch: its output f and P (B·C, numel(W)), row (b, c) = ∂f_{b,c}/∂W."""

    batch: Batch
    out: torch.Tensor
    P: torch.Tensor

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        b = directions.shape[0]
        Jx = (directions.reshape(b, -1) @ self.P.T).reshape(b, *self.out.shape)
        HJx = loss_hessian_products(self.batch, self.out, Jx).reshape(b, -1)
        return (HJx @ self.P).reshape(directions.shape)


@dataclass
class _LinearHeld:
    """One micro-batch as a linear map over positions: input patches a (B·S, n), S per
    example, G as (B, C, S·m) position-major and each example's loss Hessian Λ (B, C, C);
    a product is five matrix products, with no autograd call."""

    a: torch.Tensor
    G: torch.Tensor
    hessian: torch.Tensor

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        b, B = directions.shape[0], self.G.shape[0]
        flat = directions.reshape(b, directions.shape[1], -1)  # (b, m, n)
        dz = torch.matmul(self.a, flat.transpose(1, 2)).reshape(b, B, -1)
        Jx = torch.einsum("bcq,ibq->ibc", self.G, dz)
        HJx = torch.einsum("bcd,ibd->ibc", self.hessian, Jx)
        pulled = torch.einsum("ibc,bcq->ibq", HJx, self.G).reshape(b, self.a.shape[0], -1)
        return torch.matmul(pulled.transpose(1, 2), self.a).reshape(directions.shape)


def _linear_held(
    module: nn.Module, weight: torch.Tensor, part: OutputJacobian, max_elements: int
) -> _LinearHeld | None:
    """The lean form of a micro-batch; None where the loss Hessian is not per example
    (``ggn_route.per_example_loss_hessian``) or a convolution's patches (B·S·n elements)
    would exceed ``max_elements``. A convolution is a linear map of its patches
    (``ggn_reverse.position_major``), so its products become GEMMs too: on the bench CNN's
    ``features.7`` and ``features.10`` (S = 16) this halves the conv layer map's cost."""
    hessian = per_example_loss_hessian(part.batch, part.out)
    if hessian is None:
        return None
    _, B, m, S, n = layer_sizes(weight, part)
    if not isinstance(module, nn.Linear) and B * S * n > max_elements:
        return None
    patches, G = position_major(module, weight, part)
    return _LinearHeld(patches.reshape(B * S, n), G.reshape(B, -1, S * m).contiguous(), hessian)


class JacobianGGN:
    """X (b, *W.shape) ↦ H[X_i] (b, *W.shape) from the held G; build with ``jacobian_ggn``."""

    def __init__(self, weight: torch.Tensor, held: list[_Held | _Explicit | _LinearHeld]) -> None:
        self.weight, self._held = weight, held
        self.n_products = 0

    @property
    def explicit(self) -> bool:
        """Whether every micro-batch's products come from P (``ggn_reverse.explicit_jacobian``)."""
        return all(isinstance(part, _Explicit) for part in self._held)

    def products(self, directions: torch.Tensor) -> torch.Tensor:
        """H[X_i] for the stack ``directions`` (b, *W.shape), summed over micro-batches."""
        out = torch.zeros_like(directions)
        with torch.no_grad():
            for part in self._held:
                out += part.products(directions)
        self.n_products += directions.shape[0]
        return out

    def release(self) -> None:
        self._held.clear()


def pays_off(model: nn.Module, spec: LayerSpec) -> bool:
    """Whether the eigen step should take G itself for this layer when the h_k step did not
    hand it over: on convolutions only. On an ``nn.Linear`` the C reverse passes cost more than
    its products save (bench MLP, B = 1024: G cost 1.4–4.4 gradients; its products, as five
    matrix products, cost 0.28 / 0.62 / 0.16 gradients against 0.52 / 0.53 / 0.14 by the
    double backward on the three layers), so a linear layer uses G only when handed over."""
    return isinstance(rank_one_layer(model, spec), nn.modules.conv._ConvNd)


def jacobian_ggn(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    known: list[OutputJacobian] | None = None,
    *,
    build: bool = True,
) -> JacobianGGN | None:
    """The operator for a layer whose block is already known to be GGN-exact, or None where
    the layer is not a single-use linear/convolution, C > ``MAX_OUTPUTS``, the output has no
    example dimension first, or all G would exceed ``MAX_ELEMENTS`` (callers fall back to
    ``hvp.BlockHessian``). ``known``: every micro-batch's G as the h_k step already took it
    (``ggn_output.layer_ggn_products(keep_jacobians=...)``); then no reverse pass is taken.
    Without ``build``, None unless ``known`` covers every micro-batch."""
    module = rank_one_layer(model, spec)
    if module is None:
        return None
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    parts = known if known is not None and len(known) == len(micro_batches) else None
    if parts is None and not build:
        return None
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
    held: list[_Held | _Explicit | _LinearHeld] = []
    explicit = 0  # elements of every P and patch matrix so far: within MAX_ELEMENTS, as G are
    for part in parts:
        P = (
            part.P
            if part.P is not None
            else explicit_jacobian(module, weight, part, MAX_ELEMENTS - explicit)
        )
        if P is not None:
            explicit += P.numel()
            held.append(_Explicit(part.batch, part.out, P))
            continue
        lean = _linear_held(module, weight, part, MAX_ELEMENTS - explicit)
        if lean is not None:
            explicit += lean.a.numel()
            held.append(lean)
            continue
        layer = layer_map(module, part.a)
        G = part.G
        held.append(
            _Held(part.batch, part.out, G.reshape(G.shape[0], G.shape[1], -1), vmap(layer),
                  vmap(vjp(layer, weight)[1]), G.shape[1:])
        )  # fmt: skip
    return JacobianGGN(weight, held)
