"""Layer gradients G = ∇_W L, their float64 SVD and the numerical rank (docs/engine.md).

G = Σ_j ∇_W L_j over micro-batches j (exact: each L_j carries the full batch's normaliser).
G = U Σ Vᵀ in float64; directions V_k = u_k v_kᵀ are Frobenius-orthonormal and paired (u_k, v_k)
come from the same SVD, so h_k has no sign ambiguity. Only σ_k > τ·σ_1 are kept (τ = 1e-6),
and a softmax cross-entropy head has rank(G) ≤ C − 1 because 1ᵀG = 0
(docs/maths.md#rank-cut-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch, grad_only_for, parameter_by_name
from workers.curvature.randomized_svd import top_singular_triplets


@dataclass
class GradientSVD:
    """Top-K singular triplets of one layer's gradient, in float64."""

    sigma: torch.Tensor  # (K,)
    U: torch.Tensor  # (m, K)
    V: torch.Tensor  # (n, K)
    rank_num: int
    flags: tuple[str, ...]

    @property
    def k(self) -> int:
        return int(self.sigma.numel())


def layer_gradients(
    model: nn.Module, micro_batches: list[Batch], specs: list[LayerSpec]
) -> tuple[dict[str, torch.Tensor], float]:
    """G (float64, m x n) for each layer in ``specs`` with one backward per micro-batch."""
    params = parameter_by_name(model)
    names = sorted({s.parameter for s in specs})
    tensors = [params[n] for n in names]
    totals = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
    loss_total = 0.0
    with grad_only_for(model, tensors):
        for mb in micro_batches:
            loss = mb.loss_value(model)
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            for acc, g in zip(totals, grads, strict=True):
                if g is not None:
                    acc += g.detach().to(torch.float64)
            loss_total += float(loss.detach())
    by_param = dict(zip(names, totals, strict=True))
    return {s.name: s.matrix(by_param[s.parameter]) for s in specs}, loss_total


KRYLOV_MIN_SIDE = 512  # measured crossover (docs/benchmarks.md): block Krylov wins above it


def gradient_svd(
    G: torch.Tensor,
    top_k: int,
    *,
    rank_cutoff: float = 1e-6,
    softmax_classes: int | None = None,
    method: Literal["auto", "full", "krylov"] = "auto",
) -> GradientSVD:
    """The top K = min(top_k, r_num) singular triplets of G in float64.

    r_num = #{σ_k > τ σ_1}; with ``softmax_classes`` = C (a softmax-CE head), r_num ≤ C − 1.
    ``full``: the thin SVD. ``krylov``: randomized block Krylov (``randomized_svd.py``), where
    r_num is counted among the K + 10 computed values (flag ``rank_lower_bound`` when all of
    them pass the cut-off). ``auto``: krylov when min(m, n) ≥ ``KRYLOV_MIN_SIDE`` and
    top_k + 10 ≤ min(m, n) / 4, else full.
    """
    G64 = G.to(torch.float64)
    side = min(G64.shape)
    if method == "auto":
        wide = side >= KRYLOV_MIN_SIDE and 4 * (top_k + 10) <= side
        method = "krylov" if wide else "full"
    flags: list[str] = []
    if method == "krylov":
        top = top_singular_triplets(G64, top_k)
        U, S, V = top.U, top.S, top.V
        rank_num, lower_bound = top.rank_count(rank_cutoff)
        if lower_bound:
            flags.append("rank_lower_bound")
    else:
        U, S, Vh = torch.linalg.svd(G64, full_matrices=False)
        V = Vh.T
        rank_num = int((rank_cutoff * S[0] < S).sum()) if S.numel() else 0
    if S.numel() == 0 or float(S[0]) == 0.0:
        empty = G64.new_zeros((0,))
        return GradientSVD(
            empty,
            G64.new_zeros((G64.shape[0], 0)),
            G64.new_zeros((G64.shape[1], 0)),
            0,
            ("zero_gradient",),
        )
    if softmax_classes is not None and rank_num > softmax_classes - 1:
        rank_num = softmax_classes - 1
        flags.append("head_rank_bound")
    k = min(top_k, rank_num)
    return GradientSVD(
        S[:k].clone(), U[:, :k].contiguous(), V[:, :k].contiguous(), rank_num, tuple(flags)
    )
