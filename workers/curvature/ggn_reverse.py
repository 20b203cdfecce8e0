"""The GGN-exact route by C reverse passes from the outputs, for models with few outputs per
example (docs/engine.md, step 5).

On a GGN-exact layer (``piecewise_linear.py``) h_k = ⟨J V_k, H_L J V_k⟩ (``ggn_route.py``),
and on a single-use linear or convolution layer J V_k = J_g dz_k with the rank-1 output
tangents dz_k = (a v_k) u_kᵀ or u_k ⊗ conv(a, v_k) (``ggn_output.py``; g: z ↦ f is the rest of
the network). The forward route pushes K tangents of the layer output's size through g. When
each example has only C outputs f_b ∈ ℝ^C (C < K), the C rows of J_g are cheaper: one vmapped
VJP with the C one-hot cotangents e_c, broadcast over the examples, gives

    G_{c,b} = Σ_{b'} ∂f_{b',c}/∂z_b = ∂f_{b,c}/∂z_b       (examples do not interact),

and then, with P_b the positions (tokens, pixels) and o the output features (channels),

    (J V_k)_{b,c} = ⟨G_{c,b}, dz_{b,k}⟩ = Σ_{s∈P_b} (Σ_o u_{k,o} G_{c,b,o,s}) p_{b,k,s},
    p_{b,k} = a_b v_k (linear)  or  conv(a_b, v_k) (convolution, one output channel),

so the cost is C back-propagations through g plus one product of G with U, independent of
K. The identity G_{c,b} = ∂f_{b,c}/∂z_b needs examples that do not interact (no batch
statistics above the layer); the engine's two-direction check (``ggn_route.numerically_ggn``,
which runs this implementation against the exact h) refuses the route otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import vjp, vmap

from workers.curvature.measurement import Batch


@dataclass(frozen=True)
class OutputJacobian:
    """One micro-batch's layer input a, model output f and G (C, *z.shape), held so that a
    later step (the eigen step's products, ``ggn_jacobian.py``) need not take the C reverse
    passes again; with the layer's own Jacobian rows P where they were built."""

    batch: Batch
    a: torch.Tensor
    out: torch.Tensor
    G: torch.Tensor
    P: torch.Tensor | None = None  # (B·C, numel(W)) once built (``explicit_jacobian``)

    @classmethod
    def joined(cls, batch: Batch, chunks: list[OutputJacobian]) -> OutputJacobian:
        """The micro-batch's record from those of its chunks of examples, in order."""
        if len(chunks) == 1:
            return dataclasses.replace(chunks[0], batch=batch)
        Ps = [c.P for c in chunks if c.P is not None]
        return cls(
            batch,
            torch.cat([c.a for c in chunks]),
            torch.cat([c.out for c in chunks]),
            torch.cat([c.G for c in chunks], dim=1),
            torch.cat(Ps) if len(Ps) == len(chunks) else None,
        )


def outputs_per_example(out: torch.Tensor, examples: int) -> int | None:
    """C, the number of outputs of one example, or None when dim 0 is not the example."""
    if out.dim() < 1 or out.shape[0] != examples:
        return None
    return out[0].numel()


def output_jacobian(
    rest: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, max_outputs: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(model output f = g(z), G (C, *z.shape) with G[c, b] = ∂f_{b,c}/∂z_b), or None when
    the output's first dimension is not the example or C > ``max_outputs``."""
    out, pullback = vjp(rest, z)[:2]
    G = jacobian_rows(out, pullback, z.shape[0], max_outputs)
    return None if G is None else (out, G)


def jacobian_rows(
    out: torch.Tensor, pullback: Callable[..., Any], examples: int, max_outputs: int
) -> torch.Tensor | None:
    """G (C, *z.shape) from the pullback of z ↦ f at z (one vmapped VJP with the C one-hot
    cotangents), or None when the output's first dimension is not the example or
    C > ``max_outputs``."""
    C = outputs_per_example(out, examples)
    if C is None or max_outputs < C:
        return None
    eye = torch.eye(C, dtype=out.dtype, device=out.device)
    cotangents = eye.reshape(C, 1, *out.shape[1:]).expand(C, *out.shape)
    (G,) = vmap(pullback)(cotangents)
    G_tensor: torch.Tensor = G
    return G_tensor


def reverse_output_tangents(
    module: nn.Module, a: torch.Tensor, G: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """(K, B, C): (J V_k)_{b,c} from G (C, *z.shape), u (m_full, K) and v (n, K)."""
    C, B, K = G.shape[0], G.shape[1], u.shape[1]
    if isinstance(module, nn.Linear):  # z: (B, *positions, m); a: (B, *positions, n)
        p = (a @ v).reshape(B, -1, K)  # (B, P, K)
        Gu = (G.reshape(C, B, -1, G.shape[-1]) @ u).reshape(C, B, -1, K)  # (C, B, P, K)
        return torch.einsum("cbpk,bpk->kbc", Gu, p)
    conv: Any = module  # z: (B, O, *spatial)
    kernels = v.T.reshape(K, *conv.weight.shape[1:])
    q: torch.Tensor = conv._conv_forward(a, kernels, None).reshape(B, K, -1)  # (B, K, S)
    Gu = u.T @ G.reshape(C * B, G.shape[2], -1)  # (C·B, K, S)
    return (Gu.reshape(C, B, K, -1) * q).sum(-1).permute(2, 1, 0)


def layer_map(module: nn.Module, a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """W ↦ the layer output on input a without its bias (linear in W)."""
    if isinstance(module, nn.Linear):
        return lambda w: nn.functional.linear(a, w)
    conv: Any = module
    return lambda w: conv._conv_forward(a, w, None)


def explicit_jacobian(
    module: nn.Module, weight: torch.Tensor, part: OutputJacobian, max_elements: int
) -> torch.Tensor | None:
    """P (B·C, numel(W)) with P[(b, c)] = ∂f_{b,c}/∂W = Σ_s G[c, b, :, s] ⊗ patch_{b,s}, or None
    where it does not pay: unless the layer output has S ≥ 2C positions (pixels, tokens) per
    example, or where P would exceed ``max_elements``.

    The patches are those of ``position_major``, so convolutions of any dimension, stride,
    padding and dilation and linear layers over positions are handled alike. P costs
    C·B·m·n·S once; a product from it then costs 2·C·B·m·n against 2·B·m·n·S through the layer
    map and its adjoint. A single product reads all of P twice, so it is bound by memory
    rather than arithmetic: on the bench's CNN (B = 256, C = 10) a product went from 7.9 to
    0.7 ms on ``features.0`` (S = 64, P 6 MB) and from 34 to 24 ms on ``features.3`` (S = 64,
    P 189 MB), and P cost less than a tenth of building G (docs/benchmarks.md)."""
    C, B, m, S, n = layer_sizes(weight, part)
    if S < 2 * C or C * B * m * n > max_elements:
        return None
    patches, G = position_major(module, weight, part)
    return torch.bmm(G.transpose(2, 3).reshape(B, C * m, S), patches).reshape(B * C, m * n)


def layer_sizes(weight: torch.Tensor, part: OutputJacobian) -> tuple[int, int, int, int, int]:
    """(C, B, m, S, n): outputs and examples, the weight's rows, positions per example, and
    the weight's columns (the elements of one patch)."""
    m = weight.shape[0]
    return part.G.shape[0], part.G.shape[1], m, part.G[0, 0].numel() // m, weight[0].numel()


def position_major(
    module: nn.Module, weight: torch.Tensor, part: OutputJacobian
) -> tuple[torch.Tensor, torch.Tensor]:
    """(patches (B, S, n), G (B, C, S, m)): the layer as a linear map applied at each of its S
    positions. A linear layer's patches are its input; a convolution's are the layer map
    applied to the identity filter bank (n = numel(W)/m filters, each picking one input
    element of a patch), so any dimension, stride, padding and dilation is handled alike."""
    C, B, m, S, n = layer_sizes(weight, part)
    if isinstance(module, nn.Linear):  # z (B, *positions, m): already position-major
        return part.a.reshape(B, S, n), part.G.reshape(C, B, S, m).transpose(0, 1)
    eye = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape(n, *weight.shape[1:])
    patches = layer_map(module, part.a)(eye).reshape(B, n, S).transpose(1, 2)
    return patches, part.G.reshape(C, B, m, S).permute(1, 0, 3, 2)  # z (B, m, *spatial)
