"""Per-example projections, Kronecker (K-FAC) factors and alignment (docs/engine.md).

For a layer applied at positions t = 1..T, z_{i,t} = W a_{i,t} and δ_{i,t} = ∂ℓ_i/∂z_{i,t}
(= B · grad_output of the mean-reduced loss). With p_{i,t,k} = u_kᵀδ_{i,t}, q_{i,t,k} = v_kᵀa_{i,t}
and x_{i,k} = Σ_t p q (never materialising G_i):

    σ_k       = (1/B) Σ_{i,t} p q                      (a check of the hooks)
    h_k^EF    = (1/B) Σ_i x_{i,k}²                     (empirical Fisher, true labels)
    h_k^Kron  = (uᵀSu)(vᵀAv),  S = (1/B) Σ δδᵀ,  A = (1/(B·T)) Σ a aᵀ   (K-FAC expand)
    c_k       = Σ p q / √(Σ p² Σ q²),   Φ_k^Kron = h_k^Kron/σ_k² = 1/(T c_k²) ≥ 1/T.

``labels="mc"`` replaces the true targets by one sample from the model's predictive
distribution per example (per token for ``lm``; y = f + N(0, I) for ``mse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from api_schemas import Decomposition
from workers.curvature.fits import slope
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import IGNORE_INDEX, Batch, grad_only_for, parameter_by_name

FACTOR_MAX_DIM = 4096


@dataclass
class Projections:
    """Accumulated per-example projections of one layer onto its K gradient directions."""

    x: list[torch.Tensor] = field(default_factory=list)  # per micro-batch (b, K)
    sum_p2: torch.Tensor | None = None
    sum_q2: torch.Tensor | None = None
    sum_pq: torch.Tensor | None = None
    positions: int = 1
    S: torch.Tensor | None = None  # (m, m) Σ δδᵀ, unnormalised
    A: torch.Tensor | None = None  # (n, n) Σ a aᵀ, unnormalised
    rows: int = 0  # Σ over micro-batches of b·T


def _activations(spec: LayerSpec, module_input: torch.Tensor) -> torch.Tensor:
    """a_{i,t} as (b, T, n) float64."""
    x = module_input.detach()
    if spec.conv is not None:
        g = spec.conv
        cols = F.unfold(x, g.kernel_size, dilation=g.dilation, padding=g.padding, stride=g.stride)
        return cols.transpose(1, 2).to(torch.float64)
    return x.reshape(x.shape[0], -1, x.shape[-1]).to(torch.float64)


def _output_grads(spec: LayerSpec, grad: torch.Tensor, scale: float) -> torch.Tensor:
    """δ_{i,t} as (b, T, m) float64 (the row block of a fused output)."""
    g = grad.detach().to(torch.float64) * scale
    g = (
        g.flatten(2).transpose(1, 2)
        if spec.conv is not None
        else g.reshape(g.shape[0], -1, g.shape[-1])
    )
    if spec.rows is not None:
        g = g[..., spec.rows[0] : spec.rows[1]]
    return g


def _sampled_targets(mb: Batch, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    logits = out.detach()
    if mb.loss == "mse":
        noise = torch.randn(logits.shape, generator=generator, dtype=logits.dtype)
        return logits + noise.to(logits.device)
    probs = torch.softmax(logits.reshape(-1, logits.shape[-1]).to(torch.float64), dim=-1)
    draws = torch.multinomial(probs.cpu(), 1, generator=generator).reshape(mb.targets.shape)
    draws = draws.to(mb.targets.device)
    if mb.loss == "lm":
        draws = draws.masked_fill(mb.targets == IGNORE_INDEX, IGNORE_INDEX)
    return draws


def collect_projections(
    model: nn.Module,
    micro_batches: list[Batch],
    layers: list[tuple[LayerSpec, torch.Tensor, torch.Tensor]],
    *,
    labels: str = "true",
    seed: int = 0,
    factors: bool = True,
) -> dict[str, Projections]:
    """One forward + backward per micro-batch for all ``layers`` (spec, U (m,K), V (n,K))."""
    modules = dict(model.named_modules())
    params = parameter_by_name(model)
    weights = list({id(params[s.parameter]): params[s.parameter] for s, _, _ in layers}.values())
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    handles = []
    for path in {s.module for s, _, _ in layers}:

        def hook(
            mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, path: str = path
        ) -> None:
            acts[path] = inputs[0]

            def grad_hook(g: torch.Tensor) -> None:
                grads[path] = g

            output.register_hook(grad_hook)  # type: ignore[no-untyped-call]  # torch: unannotated

        handles.append(modules[path].register_forward_hook(hook))
    result = {s.name: Projections() for s, _, _ in layers}
    unreached: set[str] = set()
    generator = torch.Generator().manual_seed(seed)
    try:
        with grad_only_for(model, weights):
            for mb in micro_batches:
                out = mb.forward(model)
                targets = _sampled_targets(mb, out, generator) if labels == "mc" else None
                loss = mb.loss_of_output(out, targets)
                torch.autograd.grad(loss, weights, allow_unused=True)
                for spec, U, V in layers:
                    if spec.module not in acts or spec.module not in grads:
                        unreached.add(spec.name)
                        continue
                    a = _activations(spec, acts[spec.module])
                    d = _output_grads(spec, grads[spec.module], float(mb.n_examples))
                    _accumulate(result[spec.name], a, d, U, V, factors)
                acts.clear()
                grads.clear()
    finally:
        for h in handles:
            h.remove()
    # A module whose forward never ran on its weight (weights used functionally) has no hooks.
    return {name: proj for name, proj in result.items() if name not in unreached}


def _accumulate(
    acc: Projections,
    a: torch.Tensor,
    d: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    factors: bool,
) -> None:
    P = d @ U  # (b, T, K)
    Q = a @ V
    acc.x.append((P * Q).sum(dim=1))
    acc.positions = int(a.shape[1])
    acc.rows += int(a.shape[0] * a.shape[1])
    for attr, value in (
        ("sum_p2", (P * P).sum((0, 1))),
        ("sum_q2", (Q * Q).sum((0, 1))),
        ("sum_pq", (P * Q).sum((0, 1))),
    ):
        current = getattr(acc, attr)
        setattr(acc, attr, value if current is None else current + value)
    if factors and max(a.shape[-1], d.shape[-1]) <= FACTOR_MAX_DIM:
        a2 = a.reshape(-1, a.shape[-1])
        d2 = d.reshape(-1, d.shape[-1])
        acc.A = a2.T @ a2 if acc.A is None else acc.A + a2.T @ a2
        acc.S = d2.T @ d2 if acc.S is None else acc.S + d2.T @ d2


@dataclass(frozen=True)
class KroneckerQuantities:
    """The Kronecker/EF quantities of one layer over its K directions (each (K,), float64).

    With the sums of the module docstring over i = 1..B, t = 1..T:

    * ``h_ef`` h_k^EF = (1/B) Σ_i x_{i,k}², the empirical Fisher along u_k v_kᵀ;
    * ``h_kron`` h_k^Kron = (u_kᵀ S u_k)(v_kᵀ A v_k), the K-FAC expansion;
    * ``cosines`` c_k = Σ p q / √(Σ p² Σ q²);
    * ``phi`` Φ_k^Kron = h_k^Kron / σ_k², which is 1/(T c_k²) ≥ 1/T;
    * ``positions`` T; ``sigma_check_rel`` max_k |(1/B) Σ p q − σ_k| / σ_k (the hooks' check);
    * ``Lambda`` Λ_k = λ_k(S) λ_k(A) and ``phi_paper`` Φ_k^paper = (u_kᵀSu_k/λ_k(S))·
      (v_kᵀAv_k/λ_k(A)), the paper's split h^Kron = Λ Φ^paper (None without the factors);
    * ``flags``: ``kron_normalisation_violation`` (some Φ < 1/T), ``hook_sigma_mismatch``.
    """

    h_ef: torch.Tensor
    h_kron: torch.Tensor
    cosines: torch.Tensor
    phi: torch.Tensor
    positions: int
    sigma_check_rel: float
    flags: tuple[str, ...]
    Lambda: torch.Tensor | None = None
    phi_paper: torch.Tensor | None = None

    def cpu(self) -> KroneckerQuantities:
        """The same quantities with every tensor on the CPU."""
        return replace(
            self,
            h_ef=self.h_ef.cpu(),
            h_kron=self.h_kron.cpu(),
            cosines=self.cosines.cpu(),
            phi=self.phi.cpu(),
            Lambda=None if self.Lambda is None else self.Lambda.cpu(),
            phi_paper=None if self.phi_paper is None else self.phi_paper.cpu(),
        )


def kronecker_quantities(
    proj: Projections, sigma: torch.Tensor, n_examples: int
) -> KroneckerQuantities:
    """The Kronecker/EF quantities of ``proj`` for the K gradient singular values ``sigma``."""
    B = float(n_examples)
    T = proj.positions
    assert proj.sum_p2 is not None and proj.sum_q2 is not None and proj.sum_pq is not None
    x = torch.cat(proj.x, dim=0)
    h_ef = (x * x).sum(0) / B
    s_delta = proj.sum_p2 / B  # u_kᵀ S u_k
    s_act = proj.sum_q2 / (B * T)  # v_kᵀ A v_k
    h_kron = s_delta * s_act
    cos = proj.sum_pq / torch.sqrt(proj.sum_p2 * proj.sum_q2).clamp_min(1e-300)
    phi = h_kron / sigma.clamp_min(1e-300) ** 2
    sigma_hooks = proj.sum_pq / B
    flags: list[str] = []
    if bool((phi < (1.0 - 1e-6) / T).any()):
        flags.append("kron_normalisation_violation")
    sigma_rel = (
        float(((sigma_hooks - sigma).abs() / sigma.clamp_min(1e-300)).max())
        if sigma.numel()
        else 0.0
    )
    if sigma_rel > 1e-4:
        flags.append("hook_sigma_mismatch")
    Lambda = phi_paper = None
    if proj.S is not None and proj.A is not None:
        lam_d = torch.linalg.eigvalsh(proj.S / B).flip(0)
        lam_a = torch.linalg.eigvalsh(proj.A / (B * T)).flip(0)
        K = sigma.numel()
        Lambda = lam_d[:K] * lam_a[:K]
        phi_paper = (s_delta / lam_d[:K].clamp_min(1e-300)) * (s_act / lam_a[:K].clamp_min(1e-300))
    return KroneckerQuantities(
        h_ef, h_kron, cos, phi, T, sigma_rel, tuple(flags), Lambda=Lambda, phi_paper=phi_paper
    )


def alpha_decomposition(
    sigma: np.ndarray,
    h_exact: np.ndarray,
    h_kron: np.ndarray,
    cosines: np.ndarray,
    *,
    Lambda: np.ndarray | None = None,
    phi_paper: np.ndarray | None = None,
    h_ef: np.ndarray | None = None,
    h_ggn: np.ndarray | None = None,
) -> Decomposition | None:
    """The additive slope decomposition of α over one index set F (docs/engine.md).

    α_exact = 2 + slope(log Φ^Kron ~ log σ) + slope(log χ ~ log σ)
            = 2 − 2 slope(log c) + slope(log χ),
    α_Kron = β + φ_paper with β = slope(log Λ), and α_exact = α_GGN + slope(log h/h^GGN).
    F = {k : every quantity used is > 0}; slopes are OLS on log σ. None when |F| < 3.
    """
    arrays = [sigma, h_exact, h_kron, cosines] + [
        a for a in (Lambda, phi_paper, h_ef, h_ggn) if a is not None
    ]
    mask = np.all([np.isfinite(a) & (a > 0) for a in arrays], axis=0)
    if mask.sum() < 3:
        return None
    ls = np.log(sigma[mask])

    def sl(values: np.ndarray) -> float:
        return slope(ls, np.log(values[mask]))

    out = {
        "alpha_exact": sl(h_exact),
        "alpha_kron": sl(h_kron),
        "phi_kron_slope": sl(h_kron / sigma**2),
        "chi_slope": sl(h_exact / h_kron),
        "cosine_slope": sl(cosines),
    }
    if Lambda is not None and phi_paper is not None:
        out["beta"] = sl(Lambda)
        out["phi_paper"] = sl(phi_paper)
    if h_ef is not None:
        out["alpha_ef"] = sl(h_ef)
    if h_ggn is not None:
        out["alpha_ggn"] = sl(h_ggn)
    return Decomposition(**out)
