"""Case 1: directional curvature h_k for K = 20 gradient singular directions of one layer.

Costs are in gradients of the same layer (median of paired ratios), per direction = (setup +
K directions)/K. The floor is a bare reused ``create_graph=True`` gradient with K
back-propagations through it; its marginal cost per direction is reported too.
Accuracy: max relative difference of h_k to the floor's values (float64).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench import peers
from bench.cases import Setup, rel_diff
from bench.timing import Entry, method_rows, paired
from workers.curvature.forward_over_forward import forward_over_forward_curvature
from workers.curvature.forward_over_reverse import forward_over_reverse_curvature
from workers.curvature.ggn_output import (
    capture_layer_io,
    layer_ggn_products,
    output_tangents,
    rank_one_layer,
    rest_of_network,
)
from workers.curvature.ggn_route import ggn_products
from workers.curvature.hvp import BlockHessian, directional_curvature
from workers.curvature.measurement import Batch, grad_only_for
from workers.curvature.noise_floor import rounding_error
from workers.curvature.output_space import output_space_curvature, padded_directions
from workers.curvature.routes import routed_curvature, run_route


def floor_method(s: Setup, splits: list[tuple[float, float]]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        w = s.weight
        with grad_only_for(s.model, [w]):
            t0 = time.perf_counter()
            (g,) = torch.autograd.grad(s.batch.loss_value(s.model), w, create_graph=True)
            t1 = time.perf_counter()
            hs = []
            for d in s.directions:
                (hx,) = torch.autograd.grad(g, w, grad_outputs=d, retain_graph=True)
                hs.append((hx * d).sum())
            t2 = time.perf_counter()
        splits.append((t1 - t0, (t2 - t1) / len(s.directions)))
        return torch.stack(hs).detach()

    return run


H_ONLY = "curvprof h-only (hvp_diagnostics=False)"


def curvprof_method(s: Setup) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        block = BlockHessian(s.model, [s.batch], s.spec.parameter)
        out = directional_curvature(block, s.spec, s.U, s.V).h
        block.release()
        return out

    return run


def curvprof_h_only_method(s: Setup) -> Callable[[], torch.Tensor]:
    """``hvp_diagnostics=False``: h_k alone, through the layer output on linear layers (the
    weight-space route elsewhere), as the engine runs it."""

    def run() -> torch.Tensor:
        fast = output_space_curvature(s.model, [s.batch], s.spec, s.U, s.V)
        out = None if fast is None else fast[0]
        if out is None:
            block = BlockHessian(s.model, [s.batch], s.spec.parameter)
            out = directional_curvature(block, s.spec, s.U, s.V).h
            block.release()
        return out

    return run


def curvprof_routed_method(s: Setup, *, diagnostics: bool) -> Callable[[], torch.Tensor]:
    """The engine's route choice (structural proof, two-direction check, then the route)."""

    def run() -> torch.Tensor:
        block = BlockHessian(s.model, [s.batch], s.spec.parameter)
        out = routed_curvature(
            s.model, [s.batch], s.spec, s.U, s.V, block=block, diagnostics=diagnostics
        )
        block.release()
        return out.h

    return run


def ggn_jvp_method(s: Setup) -> Callable[[], torch.Tensor]:
    """The GGN route's vmapped JVP alone (no check): what it costs once a layer is proved."""

    def run() -> torch.Tensor:
        return ggn_products(s.model, [s.batch], s.spec, (s.U, s.V), weight_products=False).h

    return run


def rank_one_method(s: Setup) -> Callable[[], torch.Tensor]:
    """The GGN route with rank-1 output tangents alone (no check): linear and conv layers."""

    def run() -> torch.Tensor:
        if rank_one_layer(s.model, s.spec) is None:
            raise ValueError("not a single-use linear or convolution layer")
        return layer_ggn_products(s.model, [s.batch], s.spec, s.U, s.V, weight_products=False).h

    return run


def rank_one_variant_method(
    s: Setup, *, reverse_below: int | None, chunk: int | None
) -> Callable[[], torch.Tensor]:
    """The rank-1 GGN products alone with a chosen tangent mode and example chunking:
    ``reverse_below=0`` K forward tangents; None: C reverse passes where C < K; ``chunk``
    None: the engine's ≤ 16 MiB chunks, a large number: the whole batch at once."""

    def run() -> torch.Tensor:
        if rank_one_layer(s.model, s.spec) is None:
            raise ValueError("not a single-use linear or convolution layer")
        return layer_ggn_products(
            s.model, [s.batch], s.spec, s.U, s.V, weight_products=False,
            reverse_below=reverse_below, chunk=chunk,
        ).h  # fmt: skip

    return run


def batched_output_double_backward_method(s: Setup) -> Callable[[], torch.Tensor]:
    """The output double backward with all K tangents in one ``is_grads_batched`` call (not a
    route: measured against the loop of ``output_space.py``)."""
    module = rank_one_layer(s.model, s.spec)

    def run() -> torch.Tensor:
        if not isinstance(module, torch.nn.Linear):
            raise ValueError("not a single-use linear layer")
        u, v = padded_directions(s.spec, module.weight, s.U, s.V)
        a, z = capture_layer_io(s.model, module, s.batch)
        z = z.detach().requires_grad_(True)
        rest = rest_of_network(s.model, module, s.batch)
        with torch.enable_grad():
            (gz,) = torch.autograd.grad(s.batch.loss_of_output(rest(z)), z, create_graph=True)
            dz = output_tangents(module, a, u, v)
            (hz,) = torch.autograd.grad(gz, z, grad_outputs=dz, is_grads_batched=True)
        return (dz * hz).flatten(1).sum(1).detach().to(torch.float64)

    return run


def noise_floor_method(s: Setup, *, diagnostics: bool) -> Callable[[], torch.Tensor]:
    """The rounding-error estimate alone (``noise_floor.py``: the routed route again on 16
    examples in float32 and float64), as the routed rows include it."""
    block = BlockHessian(s.model, [s.batch], s.spec.parameter)
    route = routed_curvature(
        s.model, [s.batch], s.spec, s.U, s.V, block=block, diagnostics=diagnostics
    ).route
    block.release()

    def h_by_route(m: torch.nn.Module, batches: list[Batch]) -> torch.Tensor:
        again = run_route(route, m, batches, s.spec, s.U, s.V, diagnostics=False)
        assert again is not None
        return again.h

    def run() -> torch.Tensor:
        est = rounding_error(h_by_route, s.model, [s.batch])
        assert est is not None
        return est.per_direction

    return run


def forward_over_reverse_method(s: Setup) -> Callable[[], torch.Tensor]:
    """Forward-over-reverse in the layer output, vmapped over all K (any smooth network)."""

    def run() -> torch.Tensor:
        out = forward_over_reverse_curvature(s.model, [s.batch], s.spec, s.U, s.V)
        if out is None:
            raise ValueError("not a single-use linear or convolution layer")
        return out[0]

    return run


def forward_over_forward_method(s: Setup) -> Callable[[], torch.Tensor]:
    """Forward over forward in the layer output (layer norms decomposed), vmapped over all K."""

    def run() -> torch.Tensor:
        out = forward_over_forward_curvature(s.model, [s.batch], s.spec, s.U, s.V)
        if out is None:
            raise ValueError("not a single-use linear or convolution layer")
        return out

    return run


def methods(s: Setup) -> dict[str, Callable[[], torch.Tensor]]:
    have = peers.available()
    out: dict[str, Callable[[], torch.Tensor]] = {
        "curvprof": curvprof_method(s),
        H_ONLY: curvprof_h_only_method(s),
        "curvprof routed (diagnostics)": curvprof_routed_method(s, diagnostics=True),
        "curvprof routed h-only": curvprof_routed_method(s, diagnostics=False),
        "ggn vmapped JVP alone": ggn_jvp_method(s),
        "ggn rank-1 output tangents alone": rank_one_method(s),
        "output forward-over-reverse, vmapped": forward_over_reverse_method(s),
        "output forward-over-forward, vmapped": forward_over_forward_method(s),
        "ggn rank-1, forward, whole batch (before)": rank_one_variant_method(
            s, reverse_below=0, chunk=1 << 30
        ),
        "ggn rank-1, forward, chunked": rank_one_variant_method(s, reverse_below=0, chunk=None),
        "ggn rank-1, reverse (C < K), whole batch": rank_one_variant_method(
            s, reverse_below=None, chunk=1 << 30
        ),
        "ggn rank-1, reverse (C < K), chunked": rank_one_variant_method(
            s, reverse_below=None, chunk=None
        ),
        "output double backward, is_grads_batched": batched_output_double_backward_method(s),
        "noise floor estimate alone (h-only)": noise_floor_method(s, diagnostics=False),
    }
    if have["pyhessian"]:
        out["pyhessian (docs: all params)"] = peers.pyhessian_hk(s, freeze_others=False)
        out["pyhessian (best: others frozen)"] = peers.pyhessian_hk(s, freeze_others=True)
    if have["curvlinops"]:
        out["curvlinops (docs: H @ v each)"] = peers.curvlinops_hk(s, matrix=False)
        out["curvlinops (best: H @ V)"] = peers.curvlinops_hk(s, matrix=True)
    if have["eigenthings"]:
        out["eigenthings (docs = best)"] = peers.eigenthings_hk(s)
    if have["backpack"] and peers.backpack_supported(s) is None:
        out["backpack HMP (docs = best)"] = peers.backpack_hk(s)
    return out


def run_case(s: Setup, repeats: int) -> dict[str, Any]:
    K = len(s.directions)
    splits: list[tuple[float, float]] = []
    fl = paired(floor_method(s, splits), s.gradient, repeats)
    ref_h = fl["out"]
    # floor ratios per repeat: the splits of the timed repeats (the first is the warm-up)
    timed_splits = splits[-repeats:]
    rows: list[dict[str, Any]] = [
        {
            "method": "floor (reused create_graph grad)",
            "per_dir": fl["ratio"] / K,
            "total": fl["ratio"],
            "rel_err": 0.0,
            "ratios": fl["ratios"],
        }
    ]
    rows += method_rows(
        (Entry(name, fn, repeats) for name, fn in methods(s).items()),
        s.gradient,
        lambda name, r: {
            "method": name,
            "per_dir": r["ratio"] / K,
            "total": r["ratio"],
            "rel_err": rel_diff(r["out"], ref_h),
            "ratios": r["ratios"],
        },
    )
    marginal = [sp[1] / r for sp, r in zip(timed_splits, fl["refs"], strict=True)]
    setup = [sp[0] / r for sp, r in zip(timed_splits, fl["refs"], strict=True)]
    return {
        **s.layer_case(),
        "K": K,
        "gradient_seconds": fl["ref_seconds"],
        "floor_marginal_per_dir": statistics.median(marginal),
        "floor_setup": statistics.median(setup),
        "rows": rows,
    }
