"""Every h_k route of the engine against dense float64 Hessians, and the route decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.curvature.dense import dense_reference
from tests.curvature.models import MLP, MLPWith, PiecewiseLinearCNN
from workers.curvature import layer_inventory, profile_model

CASES = {
    "relu_mlp": (lambda: MLP((5, 7, 6, 3), "relu"), (40, 5)),
    "piecewise_cnn": (lambda: PiecewiseLinearCNN(3), (24, 1, 4, 4)),
    "gelu_mlp": (lambda: MLP((5, 7, 6, 3), "gelu"), (40, 5)),
    "layer_norm_mlp": (lambda: MLPWith(torch.nn.LayerNorm(6)), (40, 5)),
}
# the route each layer must take (diagnostics on, then h-only)
EXPECTED = {
    "relu_mlp": {"*": ("ggn_jvp", "ggn_jvp")},
    "piecewise_cnn": {"*": ("ggn_jvp", "ggn_jvp")},
    "gelu_mlp": {
        "net.0": ("weight_double_backward", "output_double_backward"),
        "net.2": ("weight_double_backward", "output_double_backward"),
        "net.4": ("ggn_jvp", "ggn_jvp"),
    },
    "layer_norm_mlp": {
        "fc1": ("weight_double_backward", "output_double_backward"),
        "fc2": ("ggn_jvp", "ggn_jvp"),
        "head": ("ggn_jvp", "ggn_jvp"),
    },
}


@pytest.mark.parametrize("diagnostics", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_layer_takes_its_route_and_matches_the_dense_hessian(
    case: str, diagnostics: bool
) -> None:
    make_model, shape = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    x = torch.randn(*shape)
    y = torch.randint(0, 3, (shape[0],))
    profile = profile_model(
        model, x, y, top_k=5, lanczos_steps=0, hvp_diagnostics=diagnostics, variants=()
    )
    specs, _ = layer_inventory(model)
    for spec, layer in zip(specs, profile.layers, strict=True):
        expected = EXPECTED[case].get(spec.name) or EXPECTED[case]["*"]
        assert layer.route == expected[0 if diagnostics else 1], spec.name
        assert (layer.route_reason is None) == (layer.route == "ggn_jvp")
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        V = torch.stack([torch.outer(U[:, i], Vh[i]).reshape(-1) for i in range(layer.k)])
        M = V @ H @ V.T
        scale = float(M.abs().max())
        np.testing.assert_allclose(layer.h, torch.diagonal(M).numpy(), rtol=0, atol=1e-12 * scale)
        if diagnostics:  # the ||H V_k|| residuals come with every route's diagnostics
            ref = torch.sqrt(1 - (torch.diagonal(M) / (V @ H).norm(dim=1)) ** 2)
            np.testing.assert_allclose(layer.residuals, ref.numpy(), atol=1e-6)
            assert layer.hvp_noise is not None and layer.hvp_noise <= 1e-14 * scale


def test_refused_route_says_why() -> None:
    torch.manual_seed(0)
    model = MLPWith(torch.nn.LayerNorm(6))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    layer = profile_model(model, x, y, top_k=3, lanczos_steps=0, layers="fc1").layers[0]
    assert layer.route_reason == "layer_norm above the layer"


def test_every_route_sets_the_float32_noise_floor() -> None:
    """h-only routes estimate ε from their own K×K matrix, and the fit drops h_k ≤ 10 ε on
    every route, as on the default one."""
    torch.manual_seed(0)
    model = MLPWith(torch.nn.LayerNorm(6))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    routes = set()
    for diagnostics in (True, False):
        profile = profile_model(
            model, x, y, top_k=5, lanczos_steps=0, dtype=torch.float32,
            hvp_diagnostics=diagnostics, variants=(),
        )  # fmt: skip
        for layer in profile.layers:
            routes.add(layer.route)
            assert layer.hvp_noise is not None and 0 < layer.hvp_noise < 1e-4 * max(layer.h)
            kept = sum(h > 10 * layer.hvp_noise for h in layer.h)
            assert layer.n_valid == kept, (layer.name, layer.route)
    assert routes == {"ggn_jvp", "output_double_backward", "weight_double_backward"}


def test_the_check_the_route_and_the_noise_estimate_run_one_implementation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Offered a shared G that then does not come, every GGN computation of the layer (check,
    route, float32 estimate) still takes reverse passes for C = 3 ≥ K = 2, as the check did."""
    from tests.curvature.test_ggn_route import float64_case
    from tests.curvature.test_seeded_lanczos import CASES
    from workers.curvature import routes
    from workers.curvature.hvp import BlockHessian

    model, _, _, batch, specs = float64_case(*CASES["piecewise_cnn"], "cross_entropy")
    seen: list[int | None] = []
    products = routes.layer_ggn_products

    def spied(*args: object, reverse_below: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
        seen.append(reverse_below)
        return products(*args, reverse_below=reverse_below, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(routes, "layer_ggn_products", spied)
    spec = specs[0]
    U = torch.linalg.qr(torch.randn(spec.shape[0], 2, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(spec.shape[1], 2, dtype=torch.float64))[0]
    curv = routes.routed_curvature(
        model, [batch], spec, U, V, block=BlockHessian(model, [batch], spec.parameter),
        diagnostics=True, known_jacobians=lambda: None,
    )  # fmt: skip
    assert curv.route == "ggn_jvp" and len(seen) >= 3
    assert set(seen) == {routes.MAX_OUTPUTS + 1}
