"""The profiling engine: every path (CLI, Ray workers, tests) computes layers through here.

Per layer group: one gradient pass for all layers (G, float64 SVD), one projection pass for the
Kronecker/EF quantities, then per layer the exact h_k by a reused double-backward graph,
optional GGN, Lanczos on the block, the fits, participation ratios and preconditioner.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from api_schemas import (
    PRECONDITIONER_MODES,
    Decomposition,
    LanczosSummary,
    LayerProfile,
    PreconditionerParams,
    ProfileSettings,
)
from api_schemas.enums import ProfilePhase
from workers.curvature import fits as fitting
from workers.curvature.ggn import ggn_curvature
from workers.curvature.ggn_jacobian import MAX_ELEMENTS, jacobian_ggn, pays_off
from workers.curvature.ggn_output import rank_one_layer
from workers.curvature.gradient import GradientSVD, gradient_svd, layer_gradients
from workers.curvature.graph import Forward
from workers.curvature.hvp import (
    BlockHessian,
    CompressedDiagnostics,
    LayerMatvec,
    block_matvec,
    compressed_diagnostics,
    layer_matvec,
)
from workers.curvature.inventory import LayerSpec, layer_inventory, select_layers
from workers.curvature.kfac import (
    KroneckerQuantities,
    Projections,
    alpha_decomposition,
    collect_projections,
    kronecker_quantities,
)
from workers.curvature.lanczos import LanczosResult, lanczos
from workers.curvature.measurement import (
    CUSTOM_LOSS,
    MODEL_LOSS,
    Batch,
    OutputLoss,
    make_batch,
    measurement_mode,
    own_loss_split_problem,
)
from workers.curvature.output_jacobians import LayerJacobians
from workers.curvature.participation import (
    finite_zeta_prediction,
    participation_ratio,
    zeta_prediction,
)
from workers.curvature.preconditioner import preconditioner_params
from workers.curvature.routes import RoutedCurvature, routed_curvature
from workers.curvature.static_batch import (
    batch_range_of,
    ranged_micro_batch,
    static_batch_of,
    static_batch_problem,
)

Progress = Callable[[str, int, int], None]
PhaseListener = Callable[[ProfilePhase], None]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def list_layer_names(
    model: nn.Module,
    layers_glob: str | None = None,
    example: Forward | Sequence[Forward] | None = None,
) -> list[str]:
    """Names of the analysable matrices matching ``layers_glob`` (all when None); give the
    ``example`` forward (``graph.example_forward`` of the measurement batch) so that the
    names are those ``profile_layers`` finds by tracing; without it, names decide."""
    specs, _ = layer_inventory(model, example)
    return [s.name for s in select_layers(specs, layers_glob)]


def _prepare(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: ProfileSettings,
    attention_mask: torch.Tensor | None,
    loss_fn: OutputLoss | None = None,
) -> tuple[nn.Module, Batch]:
    dtype = DTYPES[settings.dtype]
    work = copy.deepcopy(model).to(dtype)
    for p in work.parameters():
        p.requires_grad_(False)
    device = next(work.parameters()).device
    batch = make_batch(
        inputs,
        targets,
        settings.loss,
        dtype=dtype,
        attention_mask=attention_mask,
        device=device,
        # an encoder-decoder's mask covers its inputs, not the targets its decoder predicts
        mask_targets=not getattr(model, "forward_takes_targets", False),
        loss_fn=loss_fn,
    )
    return work, batch


def _softmax_classes(spec: LayerSpec, loss: str, n_outputs: int) -> int | None:
    if loss in ("cross_entropy", "lm") and spec.softmax_rank_bound and spec.shape[0] == n_outputs:
        return n_outputs
    return None


def profile_layers(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    layer_names: Sequence[str],
    settings: ProfileSettings,
    *,
    attention_mask: torch.Tensor | None = None,
    progress: Progress | None = None,
    loss_fn: OutputLoss | None = None,
    on_phase: PhaseListener | None = None,
) -> list[LayerProfile]:
    """Profile the named layers on the whole (inputs, targets) measurement batch.

    ``loss_fn`` (with ``settings.loss == "custom"``) is a user's mean-reduced
    ``loss(outputs, targets)``; the variants that need a known output Hessian or a predictive
    distribution (``ggn``, ``mc``) are then left out and flagged.

    ``on_phase(name)`` is called as each step (``api_schemas.enums.ProfilePhase``) starts,
    the layer phases once per layer; ``progress(layer, done, total)`` as each layer is finished.
    """
    phase = on_phase or _no_phase
    if (settings.loss == CUSTOM_LOSS) != (loss_fn is not None):
        raise ValueError('a loss callable goes with settings.loss == "custom", and only then')
    work, batch = _prepare(model, inputs, targets, settings, attention_mask, loss_fn)
    static = static_batch_of(model)  # read before the copy: GraphModule copies drop it
    micro_size = settings.micro_batch_size
    own_loss = settings.loss == MODEL_LOSS
    split = own_loss_split_problem(settings.loss, micro_size, batch.n_examples)
    if split:
        raise ValueError(split)
    if static is not None:
        problem = static_batch_problem(static, batch.n_examples, micro_size)
        if problem:
            raise ValueError(problem)
        micro_size = static
    bounds = batch_range_of(model)
    if bounds is not None:
        micro_size, problem = ranged_micro_batch(bounds, batch.n_examples, micro_size)
        if problem:
            raise ValueError(problem)
    micro = batch.split(micro_size)
    # one example, else one whole micro-batch (a program exported with a static batch)
    specs_all, _ = layer_inventory(work, [micro[0].split(1, limit=1)[0].forward, micro[0].forward])
    by_name = {s.name: s for s in specs_all}
    missing = [n for n in layer_names if n not in by_name]
    if missing:
        raise ValueError(f"unknown layer {missing[0]!r}")
    specs = [by_name[n] for n in layer_names]
    results: list[LayerProfile] = []
    jacobians = LayerJacobians.for_profile(work, micro, specs)
    with measurement_mode(work), torch.no_grad():
        started = time.perf_counter()
        phase("gradients")
        with torch.enable_grad():
            grads, _ = layer_gradients(work, micro, specs)
            smallest = static or (bounds[0] if bounds else 1) or 1  # what the program accepts
            probe = micro[0].split(smallest, limit=1)[0]
            n_outputs = int(probe.forward(work).shape[-1])
        phase("SVD")
        svds = {
            s.name: gradient_svd(
                grads[s.name],
                settings.top_k,
                rank_cutoff=settings.rank_cutoff,
                softmax_classes=_softmax_classes(s, settings.loss, n_outputs),
            )
            for s in specs
        }
        kron_layers = [
            (s, svds[s.name].U, svds[s.name].V)
            for s in specs
            if svds[s.name].k > 0 and "kfac_unavailable" not in s.flags
        ]
        projections: dict[str, dict[str, Projections]] = {}
        phase("K-FAC")
        with torch.enable_grad():
            if kron_layers and {"ef", "kron"} & set(settings.variants) and not own_loss:
                projections["true"] = collect_projections(
                    work, micro, kron_layers, seed=settings.seed
                )
            if kron_layers and "mc" in settings.variants and loss_fn is None and not own_loss:
                projections["mc"] = collect_projections(
                    work, micro, kron_layers, labels="mc", seed=settings.seed, factors=False
                )
        shared = (time.perf_counter() - started) / max(len(specs), 1)
        for index, spec in enumerate(specs):
            t0 = time.perf_counter()
            with torch.enable_grad():
                profile = _profile_one(
                    work, micro, spec, svds[spec.name], settings, projections, phase, jacobians
                )
            profile.wall_seconds = shared + time.perf_counter() - t0
            results.append(profile)
            if progress is not None:
                progress(spec.name, index + 1, len(specs))
    return results


def _no_phase(name: ProfilePhase) -> None:
    """The default ``on_phase``: nobody listens."""


def _eigen_matvec(
    model: nn.Module,
    micro: list[Batch],
    spec: LayerSpec,
    block: BlockHessian,
    curv: RoutedCurvature | None,
) -> LayerMatvec:
    """The Lanczos operator: on a layer the route found GGN-exact, products from the held
    layer-output Jacobian (``ggn_jacobian.py``: no pass through the network per product) where
    the h_k step handed G over, or on a convolution where it applies; else the block's
    reused-graph double backward."""
    if curv is not None and curv.route == "ggn_jvp":
        held = jacobian_ggn(model, micro, spec, known=curv.jacobians, build=pays_off(model, spec))
        curv.jacobians = []  # the operator holds them now
        if held is not None:
            columns = block_matvec(held.products, spec, held.weight)
            m, n = spec.shape
            return LayerMatvec(m * n, lambda v: columns(v.reshape(-1, 1))[:, 0])
    return layer_matvec(block, spec)


def _lanczos(
    operator: LayerMatvec, settings: ProfileSettings, device: torch.device
) -> LanczosResult:
    dim, matvec = operator
    steps = min(settings.lanczos_steps, dim)
    tol = 1e-8 if settings.dtype == "float64" else 1e-4
    k = min(settings.top_k, steps)
    return lanczos(
        matvec,
        dim,
        steps=steps,
        k=k,
        tol=tol,
        seed=settings.seed,
        device=device,
    )


def _as_list(t: torch.Tensor | np.ndarray | None) -> list[float]:
    if t is None:
        return []
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return [float(v) for v in arr]


def _profile_one(
    model: nn.Module,
    micro: list[Batch],
    spec: LayerSpec,
    svd: GradientSVD,
    settings: ProfileSettings,
    projections: dict[str, dict[str, Projections]],
    phase: PhaseListener,
    jacobians: LayerJacobians,
) -> LayerProfile:
    flags = list(spec.flags) + list(svd.flags)
    sigma = svd.sigma.cpu()
    block = BlockHessian(model, micro, spec.parameter)
    h = torch.zeros(0, dtype=torch.float64)
    curv: RoutedCurvature | None = None
    diagnostics: CompressedDiagnostics | None = None
    h_ggn: list[float] = []
    kron = mc = None
    if svd.k > 0:
        phase("h_k")
        eigen_from_jacobian = settings.lanczos_steps > 0 and rank_one_layer(model, spec) is not None
        curv = routed_curvature(
            model, micro, spec, svd.U, svd.V, block=block, diagnostics=settings.hvp_diagnostics,
            keep_jacobians=MAX_ELEMENTS if eigen_from_jacobian else None,
            known_jacobians=jacobians.asker(spec),
        )  # fmt: skip
        h = curv.h
        if curv.M is not None:  # h alone (no ‖H[V_k]‖): the same noise floor, nothing else
            hv_norms = curv.hv_norms.cpu() if curv.hv_norms is not None else None
            diagnostics = compressed_diagnostics(curv.M.cpu(), h, hv_norms)
        if "ggn" in settings.variants:
            try:
                h_ggn = _as_list(ggn_curvature(model, micro, spec, svd.U, svd.V))
            except (RuntimeError, NotImplementedError):
                flags.append("ggn_unavailable")
        kron, mc = _kronecker(spec, svd, projections, micro[0].n_examples, flags)
    phase("Lanczos")
    lz: LanczosResult | None = None
    if settings.lanczos_steps > 0:
        operator = _eigen_matvec(model, micro, spec, block, curv)
        lz = _lanczos(operator, settings, block.weight.device)
    block.release()
    noise = diagnostics.hvp_noise if diagnostics is not None else None
    if curv is not None and curv.rounding is not None:  # the measured rounding error of h_k
        noise = curv.rounding.eps
    h_floor = 10.0 * noise if noise is not None and math.isfinite(noise) else 0.0
    eigs = np.array([], dtype=float)
    if lz is not None:
        eigs = lz.eigenvalues[lz.converged & (lz.eigenvalues > 0)]
    phase("fits")
    fit = fitting.fit_exponents(
        sigma.numpy(),
        h.numpy(),
        eigenvalues=lz.eigenvalues if lz is not None else None,
        converged=lz.converged if lz is not None else None,
        h_floor=h_floor,
        min_points=settings.min_fit_points,
        seed=settings.seed,
    )
    flags.extend(f for f in fit.flags if f not in flags)
    mask = np.asarray(fit.fit_mask, dtype=bool)
    h_np = h.numpy()
    s_np = sigma.numpy()
    decomposition = _decomposition(svd, h, kron)
    return LayerProfile(
        name=spec.name,
        kind=spec.kind,
        parameter=spec.parameter,
        shape=spec.shape,
        rows=spec.rows,
        rank_num=svd.rank_num,
        k=svd.k,
        sigma=_as_list(sigma),
        positions=kron.positions if kron is not None else 1,
        h=_as_list(h),
        route=curv.route if curv is not None else None,
        route_reason=curv.reason if curv is not None else None,
        hvp_noise=noise,
        eps_off=diagnostics.eps_off if diagnostics is not None else None,
        residuals=diagnostics.residuals if diagnostics is not None else [],
        compressed=diagnostics.compressed if diagnostics is not None else [],
        h_ggn=h_ggn,
        h_ef=_as_list(kron.h_ef) if kron is not None else [],
        h_kron_ef=_as_list(kron.h_kron) if kron is not None else [],
        phi=_as_list(kron.phi) if kron is not None else [],
        cosines=_as_list(kron.cosines) if kron is not None else [],
        chi=_as_list(h / kron.h_kron.clamp_min(1e-300)) if kron is not None else [],
        h_mc=_as_list(mc.h_ef) if mc is not None else [],
        h_kron_mc=_as_list(mc.h_kron) if mc is not None else [],
        eigenvalues=_as_list(lz.eigenvalues) if lz is not None else [],
        lanczos=_lanczos_summary(lz),
        n_valid=fit.n_valid,
        n_neg=fit.n_neg,
        alpha=fit.alpha,
        alpha_intercept=fit.alpha_intercept,
        r2_alpha=fit.r2_alpha,
        alpha_se=fit.alpha_se,
        alpha_ci_t=fit.alpha_ci_t,
        alpha_ci_boot=fit.alpha_ci_boot,
        alpha_theilsen=fit.alpha_theilsen,
        alpha_excl_k1=fit.alpha_excl_k1,
        alpha_merged=fit.alpha_merged,
        gamma=fit.gamma,
        r2_gamma=fit.r2_gamma,
        s=fit.s,
        r2_s=fit.r2_s,
        s_unsorted=fit.s_unsorted,
        s_eig=fit.s_eig,
        r2_s_eig=fit.r2_s_eig,
        predicted_s=fit.predicted_s,
        triangle_error=fit.triangle_error,
        triangle_relative_error=fit.triangle_relative_error,
        triangle_relative_error_unsorted=fit.triangle_relative_error_unsorted,
        triangle_bound=fit.triangle_bound,
        bic={  # JSON has no NaN: a criterion that could not be computed is left out
            name: float(v["bic"])
            for name, v in fit.bic.items()
            if math.isfinite(float(v.get("bic", float("nan"))))
        },
        pr_h=participation_ratio(h_np[mask]) if mask.any() else float("nan"),
        pr_sigma=participation_ratio(s_np) if s_np.size else float("nan"),
        pr_sigma2=participation_ratio(s_np**2) if s_np.size else float("nan"),
        pr_lambda=participation_ratio(eigs) if eigs.size else float("nan"),
        zeta_pred=zeta_prediction(fit.predicted_s),
        zeta_pred_k=finite_zeta_prediction(fit.predicted_s, fit.n_valid)
        if fit.n_valid
        else float("nan"),
        decomposition=decomposition if _defined(fit.alpha) else None,  # no α, no parts of it
        preconditioner=[
            PreconditionerParams(
                **preconditioner_params(s_np, fit.alpha, fit.alpha_intercept, mode)
            )
            for mode in PRECONDITIONER_MODES
        ],
        flags=flags,
    )


def _kronecker(
    spec: LayerSpec,
    svd: GradientSVD,
    projections: dict[str, dict[str, Projections]],
    n_examples: int,
    flags: list[str],
) -> tuple[KroneckerQuantities | None, KroneckerQuantities | None]:
    """The quantities with the true labels and with sampled (``mc``) labels, where measured;
    their flags (or ``kfac_unavailable``) are added to ``flags``."""
    true = projections.get("true", {}).get(spec.name)
    if true is None:
        if projections and "kfac_unavailable" not in flags:
            flags.append("kfac_unavailable")
        return None, None
    kron = kronecker_quantities(true, svd.sigma, n_examples).cpu()
    flags.extend(f for f in kron.flags if f not in flags)
    mc = projections.get("mc", {}).get(spec.name)
    return kron, None if mc is None else kronecker_quantities(mc, svd.sigma, n_examples).cpu()


def _decomposition(
    svd: GradientSVD, h: torch.Tensor, kron: KroneckerQuantities | None
) -> Decomposition | None:
    if kron is None:
        return None
    return alpha_decomposition(
        svd.sigma.cpu().numpy(),
        h.numpy(),
        kron.h_kron.numpy(),
        kron.cosines.numpy(),
        Lambda=None if kron.Lambda is None else kron.Lambda.numpy(),
        phi_paper=None if kron.phi_paper is None else kron.phi_paper.numpy(),
        h_ef=kron.h_ef.numpy(),
    )


def _defined(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _lanczos_summary(lz: LanczosResult | None) -> LanczosSummary | None:
    if lz is None:
        return None
    return LanczosSummary(
        eigenvalues=_as_list(lz.eigenvalues),
        residuals=_as_list(lz.residuals),
        converged=[bool(c) for c in lz.converged],
        n_converged=int(lz.n_converged),
        steps=int(lz.steps),
        tol=float(lz.tol),
        most_negative=_as_list(lz.most_negative),
    )
