"""Which exact route computes a layer's h_k, and the dispatch to it (docs/engine.md).

* ``ggn_jvp`` — the block equals its GGN (``piecewise_linear.py`` proves it structurally and
  ``ggn_route.numerically_ggn`` confirms it on two directions): one vmapped JVP over all K
  directions, plus one vmapped VJP for the weight-space diagnostics (``ggn_route.py``).
* ``output_double_backward`` — h_k alone (``hvp_diagnostics=False``) on a single-use
  ``nn.Linear`` that is not GGN-exact: double back-propagation from its output
  (``output_space.py``).
* ``weight_double_backward`` — everything else: the reused ``create_graph=True`` gradient of
  the weight (``hvp.py``), exact for any twice-differentiable model.

Every route is exact (tested against dense float64 Hessians); the choice is a matter of cost
only. A GGN-route failure under ``vmap`` (an op without a batching rule) falls back. Whatever
the route, the rounding error of its h_k is measured by running it again on a sub-batch in two
precisions (``noise_floor.py``): the noise floor does not depend on the route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import nn

from api_schemas import HkRoute
from workers.curvature.forward_over_reverse import forward_over_reverse_curvature
from workers.curvature.ggn_jacobian import MAX_OUTPUTS
from workers.curvature.ggn_output import layer_ggn_products
from workers.curvature.ggn_reverse import OutputJacobian
from workers.curvature.ggn_route import CHECK_EXAMPLES, numerically_ggn
from workers.curvature.hvp import BlockHessian, directional_curvature
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import MODEL_LOSS, Batch
from workers.curvature.noise_floor import RoundingEstimate, rounding_error, sub_batch
from workers.curvature.output_space import output_space_curvature
from workers.curvature.piecewise_linear import output_structure

ROUTES: tuple[str, ...] = get_args(HkRoute)
# the check runs the route's own implementation on chunks of its sub-batch, and C reverse
# passes wherever the route will: examples that interact above the layer then fail it
CHECK_CHUNK = CHECK_EXAMPLES // 2


def exact_in_output(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cheapest exact h_k and M from the layer output: the double backward on a
    single-use ``nn.Linear`` (least per-call overhead), else forward-over-reverse (also
    convolutions); None where neither applies."""
    fast = output_space_curvature(model, micro_batches, spec, U, V)
    if fast is not None:
        return fast
    return forward_over_reverse_curvature(model, micro_batches, spec, U, V)


@dataclass
class RoutedCurvature:
    """h_k by one exact route, with the K×K matrix M (every route), ‖H V_k‖ when the route
    gives them (with the diagnostics), and the rounding error of h_k measured by running the
    route in two precisions (``noise_floor.py``; None where the model cannot be copied)."""

    h: torch.Tensor
    route: HkRoute
    M: torch.Tensor | None = None
    hv_norms: torch.Tensor | None = None
    reason: str | None = None  # why the GGN route was not taken
    rounding: RoundingEstimate | None = None
    # the GGN route's G of every micro-batch, when asked to keep them (``ggn_output.py``)
    jacobians: list[OutputJacobian] = field(default_factory=list)


def check_products(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    reverse_below: int | None = None,
) -> torch.Tensor:
    """h^GGN for all K directions by the route's own implementation on chunks of the check's
    sub-batch, with C reverse passes wherever the full run takes them (``CHECK_CHUNK`` examples;
    ``reverse_below`` as ``ggn_output.layer_ggn_products``, default K)."""
    return layer_ggn_products(
        model, micro_batches, spec, U, V, weight_products=False, chunk=CHECK_CHUNK,
        reverse_below=reverse_below or U.shape[1],
    ).h  # fmt: skip


@dataclass(frozen=True)
class GGNDecision:
    """Why the GGN route is refused (None: taken), and h^GGN on the check's sub-batch for all
    K directions when it was computed (the working-precision half of the noise estimate)."""

    reason: str | None
    sub_h: torch.Tensor | None = None


def ggn_decision(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    reverse_below: int | None = None,
) -> GGNDecision:
    """Structure, then numbers on the first ``CHECK_EXAMPLES`` examples as a batch of their
    own (``noise_floor.sub_batch``; the noise estimate's sub-batch when B ≥ 128), by the
    implementation the route will run (``reverse_below``: as ``check_products``)."""
    if micro_batches[0].loss == MODEL_LOSS:
        return GGNDecision("the model's own loss is not a function of its output alone")
    try:
        structure = output_structure(model, micro_batches[0].split(1, limit=1)[0], spec.parameter)
        if not structure.piecewise_linear:
            return GGNDecision(structure.reason)
        sub = [sub_batch(micro_batches[0], CHECK_EXAMPLES)]
        sub_h = check_products(model, sub, spec, U, V, reverse_below)
        check = numerically_ggn(
            model, micro_batches, spec, U, V, exact_in_output=exact_in_output, sub=sub,
            ggn_h=sub_h,
        )  # fmt: skip
    except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a static-batch program
        return GGNDecision(f"cannot prove: the probe forward failed ({type(exc).__name__})")
    if not check.passed:
        rel = check.relative_difference
        return GGNDecision(f"exact h differs from the GGN by {rel:.1e} (relative)")
    return GGNDecision(None, sub_h)


def ggn_refusal(
    model: nn.Module, micro_batches: list[Batch], spec: LayerSpec, U: torch.Tensor, V: torch.Tensor
) -> str | None:
    """None when the layer block is GGN-exact (structure, then numbers), else the reason."""
    return ggn_decision(model, micro_batches, spec, U, V).reason


def run_route(
    route: HkRoute,
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    *,
    diagnostics: bool,
    block: BlockHessian | None = None,
    keep_jacobians: int | None = None,
    known: list[OutputJacobian] | None = None,
    reverse_below: int | None = None,
) -> RoutedCurvature | None:
    """h_k (and M, ‖H V_k‖) by ``route`` alone; None where it does not apply. The
    weight-space route reuses ``block`` when given (its graph serves Lanczos too). Given
    ``keep_jacobians``, the GGN route takes C reverse passes wherever C ≤
    ``ggn_jacobian.MAX_OUTPUTS`` and keeps G within that many elements: they serve the eigen
    step, which would otherwise take the same passes again. ``known``: G already taken for
    every micro-batch (``output_jacobians.py``), used instead of the route's own passes.
    ``reverse_below``: as ``ggn_output.layer_ggn_products``, when the caller's check fixed it."""
    if route == "ggn_jvp":
        ggn = layer_ggn_products(
            model, micro_batches, spec, U, V, weight_products=diagnostics,
            reverse_below=reverse_below or _reverse_below(keep_jacobians, known is not None),
            keep_jacobians=keep_jacobians, known=known,
        )  # fmt: skip
        return RoutedCurvature(ggn.h.cpu(), route, ggn.M, ggn.hv_norms, jacobians=ggn.jacobians)
    if route == "output_double_backward":
        fast = output_space_curvature(model, micro_batches, spec, U, V)
        return None if fast is None else RoutedCurvature(fast[0].cpu(), route, fast[1])
    own = block is None
    block = BlockHessian(model, micro_batches, spec.parameter) if block is None else block
    curv = directional_curvature(block, spec, U, V)
    if own:
        block.release()
    return RoutedCurvature(curv.h.cpu(), route, curv.M, curv.hv_norms)


def _reverse_below(keep_jacobians: int | None, known: bool) -> int | None:
    """The GGN route's ``reverse_below``: past every C the eigen step takes G for when G is
    known or the route is to keep it for that step, else the default (K)."""
    return MAX_OUTPUTS + 1 if keep_jacobians is not None or known else None


def routed_curvature(
    model: nn.Module,
    micro_batches: list[Batch],
    spec: LayerSpec,
    U: torch.Tensor,
    V: torch.Tensor,
    *,
    block: BlockHessian,
    diagnostics: bool,
    keep_jacobians: int | None = None,
    known_jacobians: Callable[[], list[OutputJacobian] | None] | None = None,
) -> RoutedCurvature:
    """h_k for the K paired columns of U (m, K), V (n, K) by the cheapest exact route, with
    its rounding error estimated by the same route in two precisions (``keep_jacobians``:
    as ``run_route``; ``known_jacobians()`` gives the layer's G, asked only once the GGN
    route is taken)."""
    below = _reverse_below(keep_jacobians, known_jacobians is not None)
    decision = ggn_decision(model, micro_batches, spec, U, V, below)
    reason = decision.reason
    found: RoutedCurvature | None = None
    if reason is None:
        try:
            found = run_route(
                "ggn_jvp", model, micro_batches, spec, U, V, diagnostics=diagnostics,
                keep_jacobians=keep_jacobians,
                known=known_jacobians() if known_jacobians is not None else None,
                reverse_below=below,  # as the check ran, whether or not G comes
            )  # fmt: skip
        except (RuntimeError, NotImplementedError) as exc:  # no batching rule for some op
            reason = f"vmap failed: {type(exc).__name__}"
    if found is None and not diagnostics:
        found = run_route(
            "output_double_backward", model, micro_batches, spec, U, V, diagnostics=False
        )
    if found is None:
        found = run_route(
            "weight_double_backward", model, micro_batches, spec, U, V,
            diagnostics=True, block=block,
        )  # fmt: skip
    assert found is not None
    found.reason = reason
    route = found.route

    def h_by_route(m: nn.Module, batches: list[Batch]) -> torch.Tensor:
        # h alone: on the GGN route h is the same number with or without the weight
        # products (and the check's run is reused), the weight-space route computes it all
        if route == "ggn_jvp":
            return check_products(m, batches, spec, U, V, below)
        again = run_route(route, m, batches, spec, U, V, diagnostics=False)
        assert again is not None  # the route applied to the same layer of the original
        return again.h

    same = sub_batch(micro_batches[0]).n_examples == min(
        CHECK_EXAMPLES, micro_batches[0].inputs.shape[0]
    )  # the check's sub-batch is the estimate's
    working = decision.sub_h if route == "ggn_jvp" and same else None
    found.rounding = rounding_error(h_by_route, model, micro_batches, working=working)
    return found
