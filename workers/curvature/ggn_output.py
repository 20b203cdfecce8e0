"""The GGN-exact route through a layer's output, with rank-1 tangents (docs/engine.md).

On a GGN-exact layer (``piecewise_linear.py``) H[X] = Jᵀ H_L J X (``ggn_route.py``). When the
weight W has one use, a ``nn.Linear`` or a ``nn.Conv{1,2,3}d`` with ``groups = 1``, the
layer output z = A(W) + b is linear in W and the Jacobian factors as J = J_g ∂z/∂W, with g the
rest of the network (z ↦ f). For a rank-1 direction V_k = u_k v_kᵀ of the (m, n) matrix view
the output tangent needs no product with an (m, n) matrix:

    linear:       dz_k = (a v_k) u_kᵀ                   (a: (N, n), positions N)
    convolution:  dz_k = u_k ⊗ conv(a, v_k)             (v_k as one output channel's kernel)

so all K output tangents cost one product of the input with V (one convolution with K output
channels). Then

    h_k = ⟨J_g dz_k, H_L J_g dz_k⟩,   ĝ_k = J_gᵀ H_L J_g dz_k,   H[V_k] = (∂z/∂W)ᵀ ĝ_k,

with all K tangents J_g dz_k from one vmapped JVP of g (one primal pass) and all K pullbacks ĝ_k
from one vmapped VJP. With the diagnostics, the weight-space products H[V_k] give M and
‖H[V_k]‖ exactly as on the other routes (``compressed_from_products``).

Micro-batches add exactly. Any other kind of layer takes ``ggn_route.ggn_products``, which
pushes the full weight tangent through the whole model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from workers.curvature.ggn_reverse import (
    OutputJacobian,
    explicit_jacobian,
    jacobian_rows,
    layer_map,
    reverse_output_tangents,
)
from workers.curvature.ggn_route import (
    GGNProducts,
    compressed_from_products,
    ggn_products,
    loss_hessian_products,
)
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch, output_tensor
from workers.curvature.output_space import output_space_matrix, padded_directions

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CHUNK_BYTES = 16 * 2**20


class _Captured(Exception):
    """Raised by the capture hook: the forward above the layer is not needed."""


def rank_one_layer(model: nn.Module, spec: LayerSpec) -> nn.Module | None:
    """The layer's module when the route applies: the weight's only use is a plain
    ``nn.Linear`` or an ungrouped ``nn.Conv{1,2,3}d`` call; else None."""
    module_name, _, leaf = spec.parameter.rpartition(".")
    if leaf != "weight" or spec.transpose or spec.uses != 1:
        return None
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    if type(module) is nn.Linear:  # a subclass may change what forward does with W
        return module
    if type(module) in _CONVS and module.groups == 1:
        return module
    return None


@dataclass(frozen=True)
class RankOneDirections:
    """A layer ``rank_one_layer`` accepts, its weight, and the K directions as (u, v) in the
    weight's dtype, u padded to all the weight's rows (``output_space.padded_directions``)."""

    module: nn.Module
    weight: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor


def rank_one_directions(
    model: nn.Module, spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> RankOneDirections | None:
    """The rank-1 routes' common start; None where ``rank_one_layer`` refuses the layer."""
    module = rank_one_layer(model, spec)
    if module is None:
        return None
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    u, v = padded_directions(spec, weight, U, V)
    return RankOneDirections(module, weight, u, v)


def capture_layer_io(
    model: nn.Module, module: nn.Module, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input a, output z) of the layer's one call, stopping the forward there."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.append((inputs[0], out))
        raise _Captured

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            batch.forward(model)
    except _Captured:
        pass
    finally:
        handle.remove()
    if len(seen) != 1:
        raise RuntimeError("the layer was not called exactly once")
    return seen[0]


def output_tangents(
    module: nn.Module, a: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """(K, *z.shape): dz_k for u (m_full, K) with zero rows outside the block and v (n, K)."""
    K = u.shape[1]
    if isinstance(module, nn.Linear):
        p = (a @ v).movedim(-1, 0)  # (K, ...): a v_k at every position
        return p.unsqueeze(-1) * u.T.reshape(K, *([1] * (p.dim() - 1)), -1)
    conv: Any = module
    kernels = v.T.reshape(K, *conv.weight.shape[1:])
    p = conv._conv_forward(a, kernels, None).transpose(0, 1)  # (K, B, *spatial)
    tangents: torch.Tensor = p.unsqueeze(2) * u.T.reshape(K, 1, -1, *([1] * (p.dim() - 2)))
    return tangents


def rest_of_network(
    model: nn.Module, module: nn.Module, batch: Batch
) -> Callable[[torch.Tensor], torch.Tensor]:
    """g: z ↦ f, the model's output with the layer's output replaced by z."""
    kwargs = batch.forward_kwargs(model)

    def rest(z: torch.Tensor) -> torch.Tensor:
        own = vars(module).get("forward")  # an instance attribute, rarely; else the class's
        module.forward = lambda *args, **kw: z
        try:
            return output_tensor(model(batch.inputs, **kwargs))
        finally:
            if own is None:
                del module.forward
            else:
                module.forward = own

    return rest


def _one_micro_batch(
    model: nn.Module,
    module: nn.Module,
    batch: Batch,
    u: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    z: torch.Tensor,
    weight_products: bool,
    reverse_below: int,
    known: OutputJacobian | None = None,
) -> tuple[torch.Tensor, torch.Tensor, OutputJacobian | None]:
    """(h_k, the K weight-space products H[V_k], G where it was taken) on one micro-batch whose
    layer input and output are a and z, or without ``weight_products`` (h_k, M from the
    output tangents, G). ``known``: the micro-batch's G already taken (then z is not read).

    When the model has C < ``reverse_below`` outputs per example, everything comes from the
    C rows of J_g (``ggn_reverse.jacobian_rows``: C reverse passes through g): the output
    tangents J_g dz_k = ⟨G, dz_k⟩ and, with the weight products, the pullbacks
    ĝ_k = Σ_c (H_L J_g dz_k)_c G_c, so no tangent of the layer output goes through g.
    Otherwise the K tangents go forward through g in one vmapped JVP and the pullbacks back
    in one vmapped VJP (of the pullback taken to look for G, so it costs no further forward)."""
    pullback: Callable[..., Any] | None = None
    G = None
    if known is not None:
        out, G, z_shape = known.out, known.G, known.G.shape[1:]
    else:
        rest = rest_of_network(model, module, batch)
        z_shape = z.shape
        if reverse_below > 1 or weight_products:
            out, pullback = vjp(rest, z)[:2]
            if reverse_below > 1:
                G = jacobian_rows(out, pullback, z.shape[0], reverse_below - 1)
    if G is not None:
        K, C = u.shape[1], G.shape[0]
        Jdz = reverse_output_tangents(module, a, G, u, v).reshape(K, *out.shape)
    else:

        def tangent(t: torch.Tensor) -> Any:
            return jvp(rest, (z,), (t,))

        out, Jdz = vmap(tangent, out_dims=(None, 0))(output_tangents(module, a, u, v))  # type: ignore[arg-type]
    held = known if known is not None or G is None else OutputJacobian(batch, a, out, G)
    HJdz = loss_hessian_products(batch, out, Jdz)
    h = (Jdz * HJdz).flatten(1).sum(1).to(torch.float64)
    if not weight_products:
        return h, output_space_matrix(Jdz, HJdz), held
    if G is not None:
        B = z_shape[0]
        pulled = torch.einsum("kbc,cbx->kbx", HJdz.reshape(K, B, C), G.reshape(C, B, -1))
        pulled = pulled.reshape(K, *z_shape)
    else:
        assert pullback is not None
        (pulled,) = vmap(pullback)(HJdz)
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    if known is not None and known.P is not None:  # H[V_k] = Pᵀ (H_L J V_k): one product
        return h, (HJdz.reshape(K, -1) @ known.P).reshape(K, *weight.shape), held
    (products,) = vmap(vjp(layer_map(module, a), weight)[1])(pulled)
    return h, products, held


def example_chunks(
    model: nn.Module, module: nn.Module, batch: Batch, K: int, chunk: int | None = None
) -> list[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """(sub-batch, its layer input, its layer output) in chunks of ``chunk`` examples, by
    default as many as keep K tangents of the layer output within ``CHUNK_BYTES`` on a CPU
    (there fresh pages cost more than the arithmetic on tangents larger than the cache;
    docs/benchmarks.md); whole where the layer's first dimension is not the example."""
    a, z = capture_layer_io(model, module, batch)
    examples = batch.inputs.shape[0]
    if z.dim() == 0 or z.shape[0] != examples or a.shape[0] != examples:
        return [(batch, a, z)]
    chunk = _chunk_size(z, K, chunk)
    if chunk is None or chunk >= examples:
        return [(batch, a, z)]
    # copies, not views: forward-mode AD on a view would carry a tangent of its whole base
    return [(sub, a[i * chunk : (i + 1) * chunk].clone(), z[i * chunk : (i + 1) * chunk].clone())
            for i, sub in enumerate(batch.split(chunk))]  # fmt: skip


def _chunk_size(z: torch.Tensor, K: int, chunk: int | None) -> int | None:
    """``chunk`` if given, else (on a CPU) as many examples as keep K tangents of the layer
    output within ``CHUNK_BYTES``; None: the whole micro-batch."""
    if chunk is not None:
        return chunk
    if z.device.type != "cpu":
        return None
    return max(1, CHUNK_BYTES // max(K * z[0].numel() * z.element_size(), 1))


def known_chunks(
    batch: Batch, known: OutputJacobian, K: int, chunk: int | None = None
) -> list[tuple[Batch, OutputJacobian]]:
    """``example_chunks`` for a micro-batch whose G is already known: slices of it (views: the
    reverse-mode products on them carry no tangent of the base)."""
    examples, C = batch.inputs.shape[0], known.G.shape[0]
    size = _chunk_size(known.G[0], K, chunk)
    if size is None or size >= examples:
        return [(batch, known)]

    def part(i: int, sub: Batch) -> OutputJacobian:
        rows = slice(i * size, (i + 1) * size)
        P = None if known.P is None else known.P[i * size * C : (i + 1) * size * C]
        return OutputJacobian(sub, known.a[rows], known.out[rows], known.G[:, rows], P)

    return [(sub, part(i, sub)) for i, sub in enumerate(batch.split(size))]


def _pieces(
    model: nn.Module,
    module: nn.Module,
    batch: Batch,
    K: int,
    chunk: int | None,
    known: OutputJacobian | None,
) -> list[tuple[Batch, torch.Tensor, torch.Tensor, OutputJacobian | None]]:
    """(sub-batch, layer input, layer output or G, its known G) for each chunk of examples."""
    if known is None:
        return [(sub, a, z, None) for sub, a, z in example_chunks(model, module, batch, K, chunk)]
    return [(sub, part.a, part.G, part) for sub, part in known_chunks(batch, known, K, chunk)]


def layer_ggn_products(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    *,
    weight_products: bool = True,
    reverse_below: int | None = None,
    chunk: int | None = None,
    keep_jacobians: int | None = None,
    known: list[OutputJacobian] | None = None,
) -> GGNProducts:
    """``ggn_route.ggn_products`` (same ``weight_products`` option), with rank-1 output tangents
    on a layer ``rank_one_layer`` accepts, else the full weight tangent through the model.

    On the rank-1 path the examples are taken in chunks (``example_chunks``; ``chunk``
    examples if given), and h alone comes from C reverse passes (``ggn_reverse.py``) where
    the model has C < ``reverse_below`` outputs per example (default K, the number of
    directions: then the C passes are fewer than the K tangents; 0 turns it off). Chunks and
    the reverse passes both assume examples that do not interact above the layer; the
    engine's check runs them on chunks of its sub-batch, so a model that mixes examples fails
    the check (``routes.ggn_refusal``).

    With ``keep_jacobians`` (a bound on the elements of all G together) the result carries
    every micro-batch's G, when the route took reverse passes on all of them within it.
    ``known``: every micro-batch's G already taken (``output_jacobians.py``), used in place of
    the route's own reverse passes whatever C."""
    layer = rank_one_directions(model, spec, U, V)
    if layer is None:
        return ggn_products(model, micro_batches, spec, (U, V), weight_products=weight_products)
    module, weight, u, v = layer.module, layer.weight, layer.u, layer.v
    K = U.shape[1]
    below = K if reverse_below is None else reverse_below
    h = torch.zeros(K, dtype=torch.float64, device=weight.device)
    products = weight.new_zeros((K, *weight.shape)) if weight_products else h.new_zeros((K, K))
    kept: list[OutputJacobian] | None = [] if keep_jacobians is not None else None
    limit, elements = keep_jacobians or 0, 0
    with torch.no_grad():
        for index, batch in enumerate(micro_batches):
            chunks: list[OutputJacobian] = []
            given_b = known[index] if known is not None else None
            if given_b is not None and weight_products and kept is not None:
                P = explicit_jacobian(module, weight, given_b, limit - elements)
                if P is not None:  # serves H[V_k] here and the eigen step's products
                    given_b = dataclasses.replace(given_b, P=P)
                    elements += P.numel()
            for sub, a, z, given in _pieces(model, module, batch, K, chunk, given_b):
                h_b, products_b, held = _one_micro_batch(
                    model, module, sub, u, v, a, z, weight_products, below, given
                )
                h += h_b
                products += products_b
                if kept is not None:  # no G on a chunk, or too many: none is kept
                    elements += held.G.numel() if held is not None else 0
                    if held is None or elements > limit:
                        kept, chunks = None, []
                    else:
                        chunks.append(held)
            if kept is not None:
                kept.append(OutputJacobian.joined(batch, chunks))
    jacobians = kept or []
    if not weight_products:
        return GGNProducts(h=h, M=products, jacobians=jacobians)
    M, norms = compressed_from_products(spec, U, V, products)
    return GGNProducts(h=h, M=M, hv_norms=norms, jacobians=jacobians)
