"""h_k through a linear layer's output (docs/engine.md, exact; the h-only route).

For z = a Wᵀ + b, z is linear in W, so the layer-block Hessian is H[V] = Jᵀ H_z J V with
J V = a Vᵀ. For a rank-1 direction V_k = u_k v_kᵀ, J V_k = (a v_k) u_kᵀ costs no matmul, and
h_k = ⟨V_k, H[V_k]⟩ = ⟨J V_k, H_z J V_k⟩: one double back-propagation from z per direction
through a reused ``create_graph=True`` gradient ∂L/∂z, over the layer's downstream only.
The K×K compressed matrix and ‖H[V_k]‖ would need H[V_k] = (H_z J V_k)ᵀ a back, which is
what the weight-space route in ``hvp.py`` computes; this route gives h_k alone.

Exact only when the weight has exactly one use in the whole traced forward (``spec.uses``,
module calls and functional uses alike) and that use is an ``nn.Linear`` call: a second use
(``F.linear(x, mod.weight)``, a tied ``F.embedding``) adds Hessian terms that z does not
carry. Anything else returns None and the caller takes the weight-space route.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch, grad_only_for


def _single_use_linear(model: nn.Module, spec: LayerSpec) -> nn.Linear | None:
    module_name, _, leaf = spec.parameter.rpartition(".")
    if leaf != "weight" or spec.transpose:
        return None
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    if type(module) is not nn.Linear:  # a subclass may change what forward does with W
        return None
    return module if spec.uses == 1 else None


def _output_graph(
    model: nn.Module, module: nn.Linear, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(input a, output z as a graph leaf, loss built from z); None unless called once."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def capture(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        z = out.detach().requires_grad_(True)
        seen.append((inputs[0].detach(), z))
        return z

    handle = module.register_forward_hook(capture)
    try:
        with grad_only_for(model, []), torch.enable_grad():
            loss = batch.loss_value(model)
    finally:
        handle.remove()
    if len(seen) != 1:
        return None
    return seen[0][0], seen[0][1], loss


def padded_directions(
    spec: LayerSpec, weight: torch.Tensor, U: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) in the weight's dtype and device: U's rows placed in the layer's row block of
    all the weight's rows (zero elsewhere), and V."""
    rows = spec.rows or (0, weight.shape[0])
    u = torch.zeros((weight.shape[0], U.shape[1]), dtype=weight.dtype, device=weight.device)
    u[rows[0] : rows[1]] = U.to(device=weight.device, dtype=weight.dtype)
    return u, V.to(device=weight.device, dtype=weight.dtype)


def output_space_matrix(tangents: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
    """(K, K) float64: ⟨t_j, p_k⟩ for K tangents t and K products p of the same shape."""
    return (tangents.flatten(1) @ products.flatten(1).T).to(torch.float64)


def output_space_curvature(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(h_k, M) float64, h_k = Σ_micro ⟨dz_k, H_z dz_k⟩ with dz_k = (a v_k) u_kᵀ (K,) and
    M_jk = Σ_micro ⟨dz_j, H_z dz_k⟩ (K, K; its asymmetry measures the products' rounding, as
    the weight-space M's does); None if the layer is not a single-use ``nn.Linear``."""
    module = _single_use_linear(model, spec)
    if module is None:
        return None
    weight = module.weight
    K = U.shape[1]
    u_full, v = padded_directions(spec, weight, U, V)
    h = torch.zeros(K, dtype=torch.float64, device=weight.device)
    M = h.new_zeros((K, K))
    for batch in micro_batches:
        captured = _output_graph(model, module, batch)
        if captured is None:
            return None
        a, z, loss = captured
        (gz,) = torch.autograd.grad(loss, z, create_graph=True)
        if not gz.requires_grad:  # the loss is linear in z: H_z = 0
            continue
        av = a.reshape(-1, a.shape[-1]) @ v  # (N, K): a v_k for every position
        tangents, products = [], []
        for k in range(K):
            dz = (av[:, k : k + 1] * u_full[:, k]).reshape(z.shape)
            (hz,) = torch.autograd.grad(gz, z, grad_outputs=dz, retain_graph=k + 1 < K)
            h[k] += (dz * hz).sum().to(torch.float64)
            tangents.append(dz)
            products.append(hz)
        M += output_space_matrix(torch.stack(tangents), torch.stack(products))
    return h, M
