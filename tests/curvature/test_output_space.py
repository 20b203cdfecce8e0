"""The h-only route through a linear layer's output against the dense float64 Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.curvature.dense import CASES, dense_reference
from workers.curvature import layer_inventory, profile_model
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.graph import example_forward
from workers.curvature.measurement import make_batch
from workers.curvature.output_space import output_space_curvature


def _case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    make_model, make_x, classes = CASES[name]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_model().double().eval()
    x = make_x(g)
    return model, x, torch.randint(0, classes, (x.shape[0],), generator=g)


@pytest.mark.parametrize("case", sorted(CASES))
def test_h_only_profiles_match_the_dense_hessian(case: str) -> None:
    model, x, y = _case(case)
    fast = profile_model(model, x, y, top_k=6, lanczos_steps=0, hvp_diagnostics=False)
    full = profile_model(model, x, y, top_k=6, lanczos_steps=0)
    specs, _ = layer_inventory(model)
    routed = 0
    for spec, layer, ref in zip(specs, fast.layers, full.layers, strict=True):
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        dirs = [torch.outer(U[:, i], Vh[i]).reshape(-1) for i in range(layer.k)]
        h_ref = [float(d @ H @ d) for d in dirs]
        np.testing.assert_allclose(layer.h, h_ref, rtol=1e-8, atol=1e-12 * max(map(abs, h_ref)))
        np.testing.assert_allclose(layer.h, ref.h, rtol=1e-10, atol=1e-14)
        routed += layer.route != "weight_double_backward"
        assert layer.hvp_noise is not None  # every route estimates the noise floor
        assert (not layer.residuals) == (layer.route != "weight_double_backward")
        if ref.alpha is None:
            assert layer.alpha is None
        else:
            assert layer.alpha == pytest.approx(ref.alpha, rel=1e-8)
    linear = sum(
        type(model.get_submodule(s.parameter.rpartition(".")[0])) is nn.Linear for s in specs
    )
    assert routed == (len(specs) if case == "cnn_relu" else linear)  # GGN-exact: every layer


def test_micro_batches_add_up_exactly() -> None:
    model, x, y = _case("mlp_tanh")
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    spec = layer_inventory(model, example_forward(x))[0][1]
    grads, _ = layer_gradients(model, [batch], [spec])
    svd = gradient_svd(grads[spec.name], 4)
    whole = output_space_curvature(model, [batch], spec, svd.U, svd.V)
    parts = output_space_curvature(model, batch.split(7), spec, svd.U, svd.V)
    assert whole is not None and parts is not None
    torch.testing.assert_close(parts[0], whole[0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(parts[1], whole[1], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(torch.diagonal(whole[1]), whole[0], rtol=1e-12, atol=1e-15)


class Tied(nn.Module):
    """The same weight used twice: the output route would miss the second use."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def test_layers_used_twice_take_the_weight_space_route() -> None:
    torch.manual_seed(0)
    model = Tied().double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    spec = next(s for s in layer_inventory(model, example_forward(x))[0] if s.name == "inner")
    U = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64)).Q
    assert output_space_curvature(model, [batch], spec, U, U) is None
    fast = profile_model(model, x, y, top_k=3, lanczos_steps=0, hvp_diagnostics=False)
    full = profile_model(model, x, y, top_k=3, lanczos_steps=0)
    inner = [(a, b) for a, b in zip(fast.layers, full.layers, strict=True) if a.name == "inner"]
    assert inner and inner[0][0].h == inner[0][1].h and inner[0][0].hvp_noise is not None


def test_the_job_field_reaches_the_profile_settings() -> None:
    from api_schemas import JobSpec

    spec = JobSpec(checkpoint_id="zoo:mlp", dataset="digits", hvp_diagnostics=False)
    assert spec.to_settings().hvp_diagnostics is False
    assert JobSpec(checkpoint_id="zoo:mlp", dataset="digits").to_settings().hvp_diagnostics


class AlsoFunctional(nn.Module):
    """``lin`` is called as a module and its weight again through ``F.linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(x))
        return self.head(torch.tanh(nn.functional.linear(h, self.lin.weight)))


class HeadAsTable(nn.Module):
    """The head's weight doubles as the token table through ``F.embedding``."""

    def __init__(self) -> None:
        super().__init__()
        self.mid = nn.Linear(3, 3)
        self.head = nn.Linear(3, 6)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mid(nn.functional.embedding(idx, self.head.weight))))


@pytest.mark.parametrize(("make", "layer"), [(AlsoFunctional, "lin"), (HeadAsTable, "head")])
def test_a_weight_also_used_functionally_takes_the_exact_route(make: type, layer: str) -> None:
    torch.manual_seed(0)
    model = make().double()
    g = torch.Generator().manual_seed(3)
    if make is HeadAsTable:
        x, y, loss = torch.randint(0, 6, (8, 4), generator=g), torch.randint(0, 6, (8, 4)), "lm"
    else:
        x, y, loss = torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,)), "cross_entropy"
    fast = profile_model(model, x, y, loss=loss, top_k=4, lanczos_steps=0, hvp_diagnostics=False)
    spec = next(s for s in layer_inventory(model, example_forward(x))[0] if s.name == layer)
    assert spec.uses == 2
    G, H = dense_reference(model, x, y, loss, spec)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    (profiled,) = [p for p in fast.layers if p.name == layer]
    dirs = [torch.outer(U[:, i], Vh[i]).reshape(-1) for i in range(profiled.k)]
    h_ref = [float(d @ H @ d) for d in dirs]
    np.testing.assert_allclose(profiled.h, h_ref, rtol=1e-8, atol=1e-12 * max(map(abs, h_ref)))
