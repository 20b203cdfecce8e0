"""The GGN-exact route: h_k and the compressed matrix from one vmapped JVP (docs/engine.md).

When the model output f is piecewise linear in the layer weight W (``piecewise_linear.py``),
∂²f/∂W² = 0 and the layer-block Hessian is exactly its Gauss–Newton part,

    H[X] = Jᵀ H_L J X,    J X = d f(W + εX)/dε,    H_L = ∇²_f L (the loss Hessian),

so for the K directions V_k = u_k v_kᵀ (Frobenius-orthonormal)

    h_k = ⟨J V_k, H_L J V_k⟩,    M_jk = ⟨V_j, H[V_k]⟩ = ⟨J V_j, H_L J V_k⟩.

All K tangents J V_k come from one ``vmap`` of ``torch.func.jvp`` (they share one primal
pass); H_L J V_k is a vmapped forward-over-reverse product of the loss in the outputs (the
loss is defined once, in ``measurement.Batch``). With diagnostics, the weight-space products
H[V_k] = Jᵀ (H_L J V_k) come from one vmapped VJP, and M_jk = ⟨V_j, H[V_k]⟩ is taken from
them as on the double-backward route, so its asymmetry measures the same product rounding.
Micro-batches add exactly: every quantity is a sum over them.

Before the route is used, ``numerically_ggn`` confirms on two directions that the exact h
(double backward: from the layer output on a single-use ``nn.Linear``, ``output_space.py``,
else through the weight) equals the GGN value, on a sub-batch of at most ``CHECK_EXAMPLES``
examples (the identity holds per example, so a sub-batch probes the same structure).
A single-use linear or convolution layer takes rank-1 output tangents (``ggn_output.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap

from workers.curvature.ggn_reverse import OutputJacobian
from workers.curvature.hvp import BlockHessian
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch, output_tensor
from workers.curvature.output_space import output_space_curvature, output_space_matrix

CHECK_EXAMPLES = 16
# (model, micro-batches, spec, U, V) -> (h, M) or None where the route does not apply
OutputCurvature = Callable[
    [nn.Module, list[Batch], LayerSpec, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor] | None,
]
CHECK_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass
class GGNProducts:
    """Per-direction quantities of the GGN-exact route, float64 on the weight's device."""

    # (K,) ⟨J V_k, H_L J V_k⟩ with or without the weight products (M's diagonal agrees with it
    # to rounding; h needs no weight-sized sum, so it is the same number on both paths)
    h: torch.Tensor
    # (K, K): from the weight-space products with ``weight_products``, else from the output
    # tangents, ⟨J V_j, H_L J V_k⟩ (its asymmetry still measures the products' rounding)
    M: torch.Tensor | None = None
    hv_norms: torch.Tensor | None = None  # (K,) ‖H[V_k]‖_F, with ``weight_products`` only
    # every micro-batch's G where the route took C reverse passes and was asked to keep them
    jacobians: list[OutputJacobian] = field(default_factory=list)


def _tangents(
    spec: LayerSpec, U: torch.Tensor, V: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """(K, *W.shape): the parameter-shaped directions u_k v_kᵀ."""
    K = U.shape[1]
    u = U.to(device=weight.device, dtype=weight.dtype)
    v = V.to(device=weight.device, dtype=weight.dtype)
    return torch.stack([spec.embed(torch.outer(u[:, k], v[:, k])) for k in range(K)])


def output_function(
    model: nn.Module, batch: Batch, parameter: str
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(W ↦ f(W) on ``batch`` with every other parameter and buffer fixed, W)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    kwargs = {} if batch.attention_mask is None else {"attention_mask": batch.attention_mask}

    def outputs(w: torch.Tensor) -> torch.Tensor:
        state = {**params, parameter: w, **buffers}
        return output_tensor(functional_call(model, state, (batch.inputs,), kwargs))

    return outputs, params[parameter]


def loss_hessian_products(batch: Batch, out: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """H_L t for each of the K output tangents t (K, *out.shape): one batched double
    back-propagation through the loss alone (``is_grads_batched``; far less per-call overhead
    than a vmapped forward-over-reverse on these small tensors)."""
    o = out.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(batch.loss_of_output(o), o, create_graph=True)
        if not g.requires_grad:  # the loss is linear in its output: H_L = 0
            return torch.zeros_like(tangents)
        (products,) = torch.autograd.grad(g, o, tangents, is_grads_batched=True)
    return products


def per_example_loss_hessian(batch: Batch, out: torch.Tensor) -> torch.Tensor | None:
    """Λ (B, C, C), Λ_b = ∂²L/∂f_b², from C products with the one-hot tangents e_c on every
    example at once, or None where the output has no example dimension first or the loss is
    not a sum of per-example terms (checked: Λ applied to a random tangent must equal the
    loss's own product to ``CHECK_TOLERANCE``, so a loss that couples examples is refused)."""
    B = out.shape[0] if out.dim() > 0 else 0
    if B == 0:
        return None
    C = out[0].numel()
    eye = torch.eye(C, dtype=out.dtype, device=out.device)
    tangents = eye.reshape(C, 1, *out.shape[1:]).expand(C, *out.shape)
    columns = loss_hessian_products(batch, out, tangents).reshape(C, B, C)
    hessian = columns.permute(1, 2, 0).contiguous()  # [b, :, c] = Λ_b e_c
    probe = torch.randn(
        1, B, C, dtype=out.dtype, device=out.device, generator=_probe_generator(out.device)
    )
    own = loss_hessian_products(batch, out, probe.reshape(1, *out.shape)).reshape(B, C)
    mine = torch.einsum("bcd,bd->bc", hessian, probe[0])
    scale = float(own.abs().max())
    tolerance = CHECK_TOLERANCE.get(out.dtype, 1e-5)
    if float((own - mine).abs().max()) > tolerance * max(scale, 1e-300):
        return None
    return hessian


def _probe_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


def _batched_jvp(
    outputs: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, T: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(W), J T_k for every k): K tangents through one primal pass."""

    def one(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pair = jvp(outputs, (weight,), (t,))
        return pair[0], pair[1]

    out, JT = vmap(one, out_dims=(None, 0))(T)  # type: ignore[arg-type]
    return out, JT


def ggn_products(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    directions: tuple[torch.Tensor, torch.Tensor],
    *,
    weight_products: bool = True,
) -> GGNProducts:
    """h_k and M (with ``weight_products`` from H[V_k], and ‖H[V_k]‖) on a GGN-exact layer,
    for the directions u_k v_kᵀ of ``directions = (U, V)``, each pushed through the whole
    model as a full weight tangent."""
    U, V = directions
    outputs, weight = output_function(model, micro_batches[0], spec.parameter)
    T = _tangents(spec, U, V, weight)
    K = T.shape[0]
    h = torch.zeros(K, dtype=torch.float64, device=weight.device)
    output_M = h.new_zeros((K, K))
    products = torch.zeros_like(T) if weight_products else None
    for batch in micro_batches:
        outputs, weight = output_function(model, batch, spec.parameter)
        with torch.no_grad():
            out, JT = _batched_jvp(outputs, weight, T)
            HJT = loss_hessian_products(batch, out, JT)
            h += (JT * HJT).flatten(1).sum(1).to(torch.float64)
            output_M += output_space_matrix(JT, HJT)
            if products is not None:
                pullback = vjp(outputs, weight)[1]
                (pulled,) = vmap(pullback)(HJT)
                products += pulled
    if products is None:
        return GGNProducts(h=h, M=output_M)
    M, norms = compressed_from_products(spec, U, V, products)
    return GGNProducts(h=h, M=M, hv_norms=norms)


def compressed_from_products(
    spec: LayerSpec, U: torch.Tensor, V: torch.Tensor, products: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, ‖H[V_k]‖_F) in float64 from the K parameter-shaped products H[V_k] (K, *W.shape):
    M_jk = ⟨V_j, H[V_k]⟩ = u_jᵀ H[V_k] v_j."""
    K = products.shape[0]
    U64 = U.to(device=products.device, dtype=torch.float64)
    V64 = V.to(device=products.device, dtype=torch.float64)
    M = U64.new_zeros((K, K))
    norms = U64.new_zeros((K,))
    for k in range(K):
        H_k = spec.matrix(products[k]).to(torch.float64)
        M[:, k] = ((U64.T @ H_k) * V64.T).sum(dim=1)
        norms[k] = torch.linalg.norm(H_k)
    return M, norms


@dataclass(frozen=True)
class NumericalCheck:
    """Exact h against the GGN value on two directions."""

    passed: bool
    relative_difference: float


def numerically_ggn(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    *,
    products: Callable[..., GGNProducts] | None = None,
    exact_in_output: OutputCurvature = output_space_curvature,
    options: dict[str, int] | None = None,
    sub: list[Batch] | None = None,
    ggn_h: torch.Tensor | None = None,
) -> NumericalCheck:
    """max_k |h_k − h_k^GGN| / max_k |h_k| over the first two directions, on a sub-batch
    (``sub``, by default the first ``CHECK_EXAMPLES`` examples), with h^GGN from ``products``
    (the implementation the route will use, with ``options``, called as
    ``products(model, sub, spec, U, V, weight_products=False)``; by default ``ggn_products``;
    or given as ``ggn_h``, computed on ``sub``) and the exact h from ``exact_in_output`` (an
    exact output-space route) where it applies, else the double backward through the weight."""
    sub = micro_batches[0].split(CHECK_EXAMPLES, limit=1) if sub is None else sub
    n = min(2, U.shape[1])
    U2, V2 = U[:, :n], V[:, :n]
    weight = dict(model.named_parameters())[spec.parameter]
    try:
        from_output = exact_in_output(model, sub, spec, U2, V2)
    except (RuntimeError, NotImplementedError):  # an op without a forward-mode rule
        from_output = None
    exact = None if from_output is None else from_output[0]
    if exact is None:
        block = BlockHessian(model, sub, spec.parameter)
        directions = list(_tangents(spec, U2, V2, weight))
        hx = block.products(directions)
        exact = torch.stack([(d * hd).sum() for d, hd in zip(directions, hx, strict=True)])
        block.release()
    if ggn_h is None and products is None:
        ggn_h = ggn_products(model, sub, spec, (U2, V2), weight_products=False).h
    elif ggn_h is None:
        assert products is not None
        ggn_h = products(model, sub, spec, U2, V2, weight_products=False, **(options or {})).h
    ggn = ggn_h[:n].to(torch.float64)
    exact = exact.to(torch.float64)
    scale = float(exact.abs().max())
    diff = float((exact - ggn).abs().max())
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return NumericalCheck(rel <= CHECK_TOLERANCE.get(weight.dtype, 1e-5), rel)
