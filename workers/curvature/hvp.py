"""Hessian-vector products restricted to one layer block (docs/engine.md).

H[X] = d/dε ∇_W L(W + εX) with every other parameter fixed, by double backward: one
``create_graph=True`` gradient g = ∇_W L per micro-batch, reused for every direction X as
H[X] = ∂⟨g, X⟩/∂W = autograd.grad(g, W, grad_outputs=X). On CPU this is the cheapest exact
route measured (a reused graph costs 0.4–0.9 gradients per further direction). Micro-batches
add exactly: H[X] = Σ_j H_j[X].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch, grad_only_for, parameter_by_name


class BlockHessian:
    """The layer-block Hessian of one parameter as a matrix-free operator.

    Graphs of the first ``cached`` micro-batches are kept between calls, so repeated products
    (Lanczos) cost one back-propagation each; the others are rebuilt per call.
    """

    def __init__(
        self, model: nn.Module, micro_batches: list[Batch], parameter: str, *, cached: int = 1
    ) -> None:
        self.model = model
        self.micro_batches = micro_batches
        self.weight = parameter_by_name(model)[parameter]
        self.cached = cached
        self._graphs: dict[int, torch.Tensor] = {}
        self.n_products = 0

    def _gradient_graph(self, index: int) -> torch.Tensor:
        graph = self._graphs.get(index)
        if graph is not None:
            return graph
        loss = self.micro_batches[index].loss_value(self.model)
        (graph,) = torch.autograd.grad(loss, self.weight, create_graph=True)
        if index < self.cached:
            self._graphs[index] = graph
        return graph

    def products(self, directions: list[torch.Tensor]) -> list[torch.Tensor]:
        """H[X] for each parameter-shaped X, summed over micro-batches."""
        out = [torch.zeros_like(self.weight) for _ in directions]
        with grad_only_for(self.model, [self.weight]):
            for index in range(len(self.micro_batches)):
                graph = self._gradient_graph(index)
                for acc, x in zip(out, directions, strict=True):
                    (hx,) = torch.autograd.grad(
                        graph, self.weight, grad_outputs=x.to(graph.dtype), retain_graph=True
                    )
                    acc += hx
                del graph
        self.n_products += len(directions)
        return out

    def batched_products(self, directions: torch.Tensor) -> torch.Tensor:
        """H[X_i] for a stack X (b, *W.shape), summed over micro-batches: one double backward
        per micro-batch for the whole block (``is_grads_batched``, a vmap over the backward
        of the reused gradient graph), falling back to one per direction where an op has no
        batching rule."""
        out = torch.zeros_like(directions, dtype=self.weight.dtype)
        with grad_only_for(self.model, [self.weight]):
            for index in range(len(self.micro_batches)):
                graph = self._gradient_graph(index)
                x = directions.to(graph.dtype)
                try:
                    (hx,) = torch.autograd.grad(
                        graph, self.weight, grad_outputs=x, retain_graph=True,
                        is_grads_batched=True,
                    )  # fmt: skip
                except RuntimeError:  # no batching rule for some op of the backward
                    hx = torch.stack(
                        [
                            torch.autograd.grad(graph, self.weight, grad_outputs=xi,
                                                retain_graph=True)[0]
                            for xi in x
                        ]
                    )  # fmt: skip
                out += hx
                del graph
        self.n_products += directions.shape[0]
        return out

    def release(self) -> None:
        self._graphs.clear()


class LayerMatvec(NamedTuple):
    """The layer block as the operator Lanczos needs: vec(X) ↦ vec(H[X]) on R^{m·n}.

    A pair so that callers unpack it as ``dim, matvec = layer_matvec(block, spec)``.
    """

    dim: int  # m · n
    matvec: Callable[[torch.Tensor], torch.Tensor]  # float64 vec(X) → float64 vec(H[X])


def layer_matvec(block: BlockHessian, spec: LayerSpec) -> LayerMatvec:
    """vec(X) ↦ vec(H[X]) on the (m, n) matrix of ``spec`` (embedded in its parameter)."""
    m, n = spec.shape
    dtype, device = block.weight.dtype, block.weight.device

    def matvec(v: torch.Tensor) -> torch.Tensor:
        x = spec.embed(v.reshape(m, n).to(device=device, dtype=dtype))
        (hx,) = block.products([x])
        return spec.matrix(hx).reshape(-1).to(torch.float64)

    return LayerMatvec(m * n, matvec)


def block_matvec(
    products: Callable[[torch.Tensor], torch.Tensor], spec: LayerSpec, weight: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """(dim, b) columns vec(X_i) ↦ (dim, b) columns vec(H[X_i]) on the (m, n) matrix of
    ``spec``, from ``products``: (b, *W.shape) ↦ (b, *W.shape) in one batched call
    (``BlockHessian.batched_products``, ``ggn_block.GGNBlock.products``)."""
    m, n = spec.shape

    def matvec(x: torch.Tensor) -> torch.Tensor:
        cols = x.to(device=weight.device, dtype=weight.dtype).t().reshape(-1, m, n)
        hx = products(torch.stack([spec.embed(c) for c in cols]))
        flat = torch.stack([spec.matrix(h).reshape(-1) for h in hx], dim=1)
        return flat.to(torch.float64)

    return matvec


@dataclass(frozen=True)
class DirectionalCurvature:
    """Curvature of the layer block along K rank-one directions V_k = u_k v_kᵀ, float64.

    h_k = ⟨V_k, H[V_k]⟩ (K,), the compressed matrix M_jk = ⟨V_j, H[V_k]⟩ (K, K, column k from
    the product H[V_k]) with h = diag M, and ‖H[V_k]‖_F (K,).
    """

    h: torch.Tensor
    M: torch.Tensor
    hv_norms: torch.Tensor


def directional_curvature(
    block: BlockHessian, spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> DirectionalCurvature:
    """h_k = ⟨u_k v_kᵀ, H[u_k v_kᵀ]⟩ for the K paired columns of U (m,K), V (n,K), with M and
    ‖H[V_k]‖_F; M's asymmetry median_{j<k} |M_jk − M_kj| estimates the HVP noise."""
    K = U.shape[1]
    dtype = block.weight.dtype
    directions = [spec.embed(torch.outer(U[:, k], V[:, k]).to(dtype)) for k in range(K)]
    products = block.products(directions)
    M = U.new_zeros((K, K))
    norms = U.new_zeros((K,))
    for k, hx in enumerate(products):
        H_k = spec.matrix(hx).to(torch.float64)
        M[:, k] = ((U.T @ H_k) * V.T).sum(dim=1)  # u_jᵀ H_k v_j for every j
        norms[k] = torch.linalg.norm(H_k)
    return DirectionalCurvature(torch.diagonal(M).clone(), M, norms)


@dataclass(frozen=True)
class CompressedDiagnostics:
    """What the K x K compressed matrix M_jk = ⟨V_j, H[V_k]⟩ says about the measured h_k.

    * ``hvp_noise`` ε = median_{j<k} |M_jk − M_kj| (H is symmetric: the asymmetry is noise);
    * ``eps_off`` ε_off = ‖M − diag M‖_F / ‖M‖_F, the mass off the diagonal (0 when the V_k
      are eigen-directions of H);
    * ``residuals`` r_k = √(1 − h_k² / ‖H[V_k]‖²) = ‖H[V_k] − h_k V_k‖ / ‖H[V_k]‖;
    * ``compressed`` M itself, row j, column k.

    ε and ε_off are NaN for K < 2.
    """

    hvp_noise: float
    eps_off: float
    residuals: list[float]
    compressed: list[list[float]]


def compressed_diagnostics(
    M: torch.Tensor, h: torch.Tensor, hv_norms: torch.Tensor | None
) -> CompressedDiagnostics:
    """The diagnostics of M (K, K), its diagonal h (K,) and ‖H[V_k]‖_F (K,).

    Without ``hv_norms`` (a route that measured h alone) only ε and ε_off are given: the
    residuals and M itself are left empty."""
    K = M.shape[0]
    if K >= 2:
        iu = torch.triu_indices(K, K, offset=1)
        noise = float(torch.median((M[iu[0], iu[1]] - M[iu[1], iu[0]]).abs()))
        total = float(torch.linalg.norm(M))
        eps_off = (
            float(torch.linalg.norm(M - torch.diag(torch.diagonal(M)))) / total if total else 0.0
        )
    else:
        noise, eps_off = float("nan"), float("nan")
    if hv_norms is None:
        return CompressedDiagnostics(noise, eps_off, [], [])
    ratio = torch.where(hv_norms > 0, h / hv_norms.clamp_min(1e-300), torch.zeros_like(h))
    residuals = torch.sqrt(torch.clamp(1.0 - ratio**2, min=0.0))
    return CompressedDiagnostics(noise, eps_off, residuals.tolist(), M.tolist())
