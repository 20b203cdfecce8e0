"""G of several layers from one joint reverse pass (``output_jacobians.py``) against each
layer's own C reverse passes, and the GGN route on it against dense float64 Hessians."""

from __future__ import annotations

import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.test_ggn_jacobian import StridedPositions
from tests.curvature.test_ggn_route import float64_case
from tests.curvature.test_seeded_lanczos import CASES
from workers.curvature import output_jacobians
from workers.curvature.ggn_output import (
    capture_layer_io,
    layer_ggn_products,
    rank_one_layer,
    rest_of_network,
)
from workers.curvature.ggn_reverse import output_jacobian
from workers.curvature.output_jacobians import LayerJacobians, joint_output_jacobians

F64 = torch.float64
MODELS = {"piecewise_cnn": CASES["piecewise_cnn"], "strided": (StridedPositions, (12, 2, 11))}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_one_joint_pass_gives_every_layers_own_jacobian(case: str) -> None:
    model, _, _, batch, specs = float64_case(*MODELS[case], "cross_entropy")
    modules = [rank_one_layer(model, s) for s in specs]
    assert all(m is not None for m in modules)
    joint = joint_output_jacobians(model, batch, modules, max_outputs=64)
    assert joint is not None
    for module in modules:
        a, z = capture_layer_io(model, module, batch)
        found = output_jacobian(rest_of_network(model, module, batch), z, 64)
        assert found is not None
        out, G = found
        torch.testing.assert_close(joint[module].G, G, rtol=0, atol=1e-14)
        torch.testing.assert_close(joint[module].a, a, rtol=0, atol=0)
        torch.testing.assert_close(joint[module].out, out, rtol=0, atol=1e-14)


@pytest.mark.parametrize("keep", [None, 10**9])
def test_the_route_on_known_jacobians_equals_dense(keep: int | None) -> None:
    """h_k, M and ‖H[V_k]‖ with G from the joint pass (chunked, three micro-batches) against
    the dense block Hessian, with C = 3 ≥ K = 2 (the route alone would push tangents); kept
    for the eigen step, the weight products come from the layer's own Jacobian rows P."""
    model, x, y, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    micro = batch.split(7)
    jacobians = LayerJacobians.for_profile(model, micro, specs)
    for spec in specs:
        _, H = dense_reference(model, x, y, "cross_entropy", spec)
        m, n = spec.shape
        g = torch.Generator().manual_seed(5)
        U = torch.linalg.qr(torch.randn(m, 2, dtype=F64, generator=g))[0]
        V = torch.linalg.qr(torch.randn(n, 2, dtype=F64, generator=g))[0]
        asker = jacobians.asker(spec)
        assert asker is not None
        known = asker()
        assert known is not None and len(known) == len(micro)
        r = layer_ggn_products(model, micro, spec, U, V, chunk=3, known=known, keep_jacobians=keep)
        # conv1 has S = 16 ≥ 2C output positions: H[V_k] came from P, which is kept
        P = [j.P for j in r.jacobians if j.P is not None]
        assert len(P) == (len(micro) if spec.name == "conv1" and keep is not None else 0)
        D = torch.stack([torch.outer(U[:, k], V[:, k]).reshape(-1) for k in range(2)], dim=1)
        HD = H @ D
        scale = float(H.abs().max())
        torch.testing.assert_close(r.h, (D * HD).sum(0), rtol=0, atol=1e-12 * scale)
        assert r.M is not None and r.hv_norms is not None
        torch.testing.assert_close(r.M, D.T @ HD, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(r.hv_norms, HD.norm(dim=0), rtol=0, atol=1e-12 * scale)


def test_a_pass_covers_the_layers_after_the_one_asked_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _, _, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    passes: list[int] = []
    joint = output_jacobians.joint_output_jacobians

    def counted(model_, batch_, modules, max_outputs, io=None):  # type: ignore[no-untyped-def]
        passes.append(len(modules))
        return joint(model_, batch_, modules, max_outputs, io)

    monkeypatch.setattr(output_jacobians, "joint_output_jacobians", counted)
    modules = [rank_one_layer(model, s) for s in specs]
    every = LayerJacobians(model, [batch], modules, 64, 10**9)
    assert every.take(modules[1]) is not None and every.take(modules[2]) is not None
    assert every.take(modules[0]) is None  # listed before the first asked: done already
    assert every.take(modules[1]) is None  # handed over once
    assert passes == [2]
    C, B = 3, batch.inputs.shape[0]
    first_alone = C * B * capture_layer_io(model, modules[0], batch)[1][0].numel()
    tight = LayerJacobians(model, [batch], modules, 64, first_alone)
    assert tight.take(modules[0]) is not None and passes == [2, 1]
    assert tight.take(modules[1]) is not None and passes == [2, 1, 2]
    assert LayerJacobians(model, [batch], modules, 64, first_alone - 1).take(modules[0]) is None
    assert LayerJacobians(model, [batch], modules, 2, 10**9).take(modules[0]) is None  # C > 2


def test_a_failed_joint_pass_leaves_each_route_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")

    def no_batching_rule(*_args: object) -> None:
        raise RuntimeError("vmap: no batching rule")

    monkeypatch.setattr(output_jacobians, "joint_output_jacobians", no_batching_rule)
    jacobians = LayerJacobians.for_profile(model, [batch], specs)
    asker = jacobians.asker(specs[0])
    assert asker is not None and asker() is None
