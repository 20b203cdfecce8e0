"""The Spectral Newton optimizer (docs/optimizer.md): SN on hidden matrices, AdamW elsewhere.

Per SN parameter W (conv kernels viewed as C_out × C_in·kh·kw), with gradient G:

1. M ← μM + (1−μ)G; D = (1−μ)G + μM with Nesterov, else D = M (μ = 0: D = G).
2. ΔW = Σ_k σ_k(D)/(κσ_k^α + λ) · u_k v_kᵀ (:func:`spectral_newton_direction`), where by mode
   * ``paper``: κ as given (1 unless set), λ = d;
   * ``newton``: κ = exp(alpha_intercept) from the profile, λ = d·κ·median(σ)^α over the top
     20 σ of D above 1e-6·σ_1 (the α-fit window, docs/maths.md#fit-window-and-exponents;
     as ``preconditioner_params``);
   * ``normalized``: σ̃ = σ/σ_1, i.e. ΔW is the direction of D/σ_1 with κ and λ = d.
   Optionally (``shape_scale``, off by default; docs/maths.md#spectral-newton-step)
   ΔW ×= max(1, m/n)^½ (Muon).
3. W ← W(1 − ηλ_wd) − ηΔW (decoupled weight decay).

Parameter groups carry ``sn`` (True: the SN step; False: AdamW with ``betas``/``eps``), so one
optimizer trains the whole model. :meth:`SpectralNewton.for_model` and
:meth:`SpectralNewton.from_profile` build the groups from the layer inventory: one SN group per
hidden conv/linear matrix (with its α and κ) and one AdamW group for the output head,
embeddings, norm gains, biases and every parameter not analysed. A fused QKV parameter is one
SN matrix with the fused layer's α (the paper analysed fused QKV as one matrix); its q/k/v
row blocks are not stepped separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from api_schemas.enums import PRECONDITIONER_MODES, PreconditionerMode
from api_schemas.profile import LayerProfile, Profile, ProfileSettings
from workers.curvature.graph import example_forward
from workers.curvature.inventory import layer_inventory
from workers.optim.defaults import SN_KINDS, default_alpha
from workers.optim.directions import (
    METHODS,
    Method,
    gram_singular_values,
    spectral_newton_direction,
)

__all__ = ["MODES", "LayerAssignment", "SNMode", "SpectralNewton", "load_profile"]

SNMode = PreconditionerMode
MODES = PRECONDITIONER_MODES
# newton mode's median window is the α-fit window of a profile with the default settings
RANK_CUTOFF: float = ProfileSettings.model_fields["rank_cutoff"].default
NEWTON_TOP_K: int = ProfileSettings.model_fields["top_k"].default


@dataclass(frozen=True)
class LayerAssignment:
    """Where one parameter went: SN with (α, κ) and where α came from, or AdamW."""

    parameter: str
    kind: str
    optimizer: Literal["sn", "adamw"]
    alpha: float | None = None
    kappa: float | None = None
    source: Literal["profile", "default", "override", "none"] = "none"


def load_profile(profile: Profile | Mapping[str, Any] | str | Path) -> Profile:
    """A :class:`Profile` from itself, a dict, or a path to its JSON file."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, Mapping):
        return Profile.model_validate(dict(profile))
    return Profile.model_validate_json(Path(profile).read_text(encoding="utf-8"))


def _profile_layer(profile: Profile, parameter: str) -> LayerProfile | None:
    """The whole-parameter layer (plain or fused, rows None) measured on ``parameter``."""
    whole = (ly for ly in profile.layers if ly.parameter == parameter and ly.rows is None)
    return next(whole, None)


class SpectralNewton(torch.optim.Optimizer):
    """Spectral Newton: ΔW = Σ_k σ_k/(κσ_k^α + d) u_k v_kᵀ of the Nesterov momentum
    (docs/maths.md#spectral-newton-step).

    ``params`` as for any torch optimizer; a group's ``sn`` key (default True) selects SN or
    AdamW. SN groups must hold matrices (ndim ≥ 2). Defaults: μ = 0.95 Nesterov, d = 0.1,
    κ = 1, α = 2 (the paper's vision setting), mode ``paper``, no weight decay, AdamW betas
    (0.9, 0.999) and eps 1e-8.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        *,
        alpha: float = 2.0,
        kappa: float = 1.0,
        damping: float = 0.1,
        mode: SNMode = "paper",
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        method: Method = "auto",
        shape_scale: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "sn": True,
            "alpha": alpha,
            "kappa": kappa,
            "damping": damping,
            "mode": mode,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "method": method,
            "shape_scale": shape_scale,
            "betas": betas,
            "eps": eps,
        }
        self.assignments: list[LayerAssignment] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.add_param_group``, then validate the group's settings."""
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1])

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        lr: float = 0.02,
        *,
        adamw_lr: float = 3e-3,
        adamw_weight_decay: float | None = None,
        alphas: Mapping[str, float] | None = None,
        kappas: Mapping[str, float] | None = None,
        example_inputs: torch.Tensor | None = None,
        profile: Profile | None = None,
        **options: Any,
    ) -> SpectralNewton:
        """SN on the hidden conv/linear matrices of ``model`` with α by layer kind
        (:data:`~workers.optim.defaults.DEFAULT_ALPHA`), AdamW (``adamw_lr``) on the rest:
        one SN group per hidden matrix, one AdamW group for everything else.

        ``alphas``/``kappas`` map parameter names to overrides; a ``profile`` gives α per
        parameter (see :meth:`from_profile`). ``options`` go to :class:`SpectralNewton`
        (``weight_decay`` also applies to AdamW unless ``adamw_weight_decay`` is given). With
        ``example_inputs`` (a batch the model takes), kinds come from the structure of one
        traced forward, otherwise from module names.
        """
        return cls._build(
            model,
            lr,
            adamw_lr,
            adamw_weight_decay,
            profile,
            alphas,
            kappas,
            options,
            example_inputs,
        )

    @classmethod
    def from_profile(
        cls,
        model: nn.Module,
        profile: Profile | Mapping[str, Any] | str | Path,
        lr: float = 0.02,
        **keywords: Any,
    ) -> SpectralNewton:
        """As :meth:`for_model` (which takes the same ``keywords``), with α per parameter from
        a curvprof profile (object, dict or JSON path), matched on ``LayerProfile.parameter``;
        a layer with α undefined (or absent) falls back to its kind default. In ``newton``
        mode κ = exp(alpha_intercept) where α came from the profile, else κ = 1.
        """
        return cls.for_model(model, lr, profile=load_profile(profile), **keywords)

    @classmethod
    def _build(
        cls,
        model: nn.Module,
        lr: float,
        adamw_lr: float,
        adamw_weight_decay: float | None,
        profile: Profile | None,
        alphas: Mapping[str, float] | None,
        kappas: Mapping[str, float] | None,
        options: dict[str, Any],
        example_inputs: torch.Tensor | None = None,
    ) -> SpectralNewton:
        example = None if example_inputs is None else example_forward(example_inputs)
        specs, _ = layer_inventory(model, example)
        kinds = {s.parameter: s.kind for s in specs if s.rows is None}
        named = dict(model.named_parameters())
        mode = options.get("mode", "paper")
        sn_groups: list[dict[str, Any]] = []
        adamw: list[torch.Tensor] = []
        assignments: list[LayerAssignment] = []
        for pname, param in named.items():
            if not param.requires_grad:
                continue
            kind = kinds.get(pname, "none")
            if kind not in SN_KINDS or param.ndim < 2:
                adamw.append(param)
                assignments.append(LayerAssignment(pname, kind, "adamw"))
                continue
            alpha, kappa, source = _alpha_kappa(pname, kind, profile, mode, alphas, kappas)
            sn_groups.append({"params": [param], "alpha": alpha, "kappa": kappa, "name": pname})
            assignments.append(LayerAssignment(pname, kind, "sn", alpha, kappa, source))
        wd = options.get("weight_decay", 0.0) if adamw_weight_decay is None else adamw_weight_decay
        groups = list(sn_groups)
        if adamw:
            groups.append(
                {"params": adamw, "sn": False, "lr": adamw_lr, "weight_decay": wd, "name": "adamw"}
            )
        opt = cls(groups, lr, **options)
        opt.assignments = assignments
        return opt

    # ------------------------------------------------------------------------------ stepping
    @overload
    def step(self, closure: None = ...) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One SN step on ``sn`` groups and one AdamW step on the others."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["sn"]:
                    self._sn_update(p, group)
                else:
                    self._adamw_update(p, group)
        return loss

    def _sn_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """D from Nesterov momentum, ΔW by mode, W ← W(1 − ηλ_wd) − ηΔW."""
        g = p.grad
        assert g is not None
        mu = float(group["momentum"])
        if mu > 0.0:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf: torch.Tensor = state["momentum_buffer"]
            buf.lerp_(g, 1.0 - mu)  # M ← μM + (1−μ)G
            d = g.lerp(buf, mu) if group["nesterov"] else buf
        else:
            d = g
        delta = _mode_direction(
            d,
            float(group["alpha"]),
            float(group["damping"]),
            float(group["kappa"]),
            group["mode"],
            group["method"],
        )
        if group["shape_scale"]:
            rows, cols = d.shape[0], d[0].numel()
            delta = delta * max(1.0, rows / cols) ** 0.5
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        if wd:
            p.mul_(1.0 - lr * wd)
        p.add_(delta, alpha=-lr)

    def _adamw_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """AdamW: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², W ← W(1−ηλ) − η m̂/(√v̂ + ε)."""
        g = p.grad
        assert g is not None
        state = self.state[p]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        state["step"] = int(state["step"]) + 1
        t = state["step"]
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        if wd:
            p.mul_(1.0 - lr * wd)
        state["exp_avg"].lerp_(g, 1.0 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1.0 - beta2**t)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - beta1**t))


def _mode_direction(
    d: torch.Tensor, alpha: float, damping: float, kappa: float, mode: str, method: Method
) -> torch.Tensor:
    """ΔW for one matrix in ``paper``/``newton``/``normalized`` mode (module docstring)."""
    if mode == "paper":
        return spectral_newton_direction(d, alpha, damping, kappa, method=method)
    sigma = gram_singular_values(d)
    top = float(sigma[0]) if sigma.numel() else 0.0
    if not top > 0.0 or not math.isfinite(top):
        return torch.zeros_like(d)
    if mode == "normalized":
        return spectral_newton_direction(d / top, alpha, damping, kappa, method=method)
    window = sigma[sigma > RANK_CUTOFF * top][:NEWTON_TOP_K]
    lam = damping * kappa * float(torch.quantile(window, 0.5)) ** alpha
    return spectral_newton_direction(d, alpha, lam, kappa, method=method)


def _alpha_kappa(
    pname: str,
    kind: str,
    profile: Profile | None,
    mode: str,
    alphas: Mapping[str, float] | None,
    kappas: Mapping[str, float] | None,
) -> tuple[float, float, Literal["profile", "default", "override"]]:
    """(α, κ, source) for one SN parameter: override > profile (finite α) > kind default."""
    alpha, kappa = default_alpha(kind), 1.0
    source: Literal["profile", "default", "override"] = "default"
    layer = _profile_layer(profile, pname) if profile is not None else None
    if layer is not None and layer.alpha is not None and math.isfinite(layer.alpha):
        alpha, source = float(layer.alpha), "profile"
        icpt = layer.alpha_intercept
        if mode == "newton" and icpt is not None and math.isfinite(icpt):
            kappa = math.exp(icpt)
    if alphas and pname in alphas:
        alpha, source = float(alphas[pname]), "override"
    if kappas and pname in kappas:
        kappa = float(kappas[pname])
    return alpha, kappa, source


def _check_group(group: Mapping[str, Any]) -> None:
    """Reject settings SN cannot run with, at construction time."""
    if group["mode"] not in MODES:
        raise ValueError(f"unknown mode {group['mode']!r}; expected one of {MODES}")
    if group["method"] not in METHODS:
        raise ValueError(f"unknown method {group['method']!r}; expected one of {METHODS}")
    if not 0.0 <= float(group["momentum"]) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {group['momentum']}")
    if float(group["lr"]) < 0.0 or float(group["weight_decay"]) < 0.0:
        raise ValueError("lr and weight_decay must be non-negative")
    if group["sn"]:
        if float(group["kappa"]) <= 0.0 or float(group["damping"]) < 0.0:
            raise ValueError("SN needs kappa > 0 and damping ≥ 0")
        if not math.isfinite(float(group["alpha"])):
            raise ValueError(f"SN needs a finite alpha, got {group['alpha']}")
        params: Iterable[torch.Tensor] = group["params"]
        for p in params:
            if p.ndim < 2:
                raise ValueError(
                    f"SN groups need matrices (ndim ≥ 2), got shape {tuple(p.shape)}; "
                    "put vectors in a group with sn=False (AdamW)"
                )
