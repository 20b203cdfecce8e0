"""The rounding-error bound of h_k (noise_floor.py) against the true float32 error: the same
route in float32 and in float64 on the same model, data and directions."""

from __future__ import annotations

import pytest
import torch

from bench.hk_noise import noise_rows
from tests.curvature.models import MLP, PiecewiseLinearCNN, TinyTransformer
from workers.curvature import profile_model
from workers.curvature.measurement import make_batch
from workers.curvature.noise_floor import cast_batch, sub_batch

MODELS = {
    "relu_mlp": (lambda: MLP((20, 16, 16, 5), "relu"), (64, 20)),
    "tanh_mlp": (lambda: MLP((20, 16, 16, 5), "tanh"), (64, 20)),
    "piecewise_cnn": (lambda: PiecewiseLinearCNN(5), (64, 1, 4, 4)),
    "transformer": (lambda: TinyTransformer(8, 5), (64, 5, 8)),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_the_bound_holds_the_true_float32_error_and_the_asymmetry_does_not(case: str) -> None:
    make_model, shape = MODELS[case]
    torch.manual_seed(0)
    model = make_model()
    x, y = torch.randn(*shape), torch.randint(0, 5, (shape[0],))
    rows = noise_rows(case, model, x, y, "cross_entropy", top_k=6)
    routes = {r.route for r in rows}
    assert routes >= ({"ggn_jvp"} if case in ("relu_mlp", "piecewise_cnn") else
                      {"output_double_backward", "weight_double_backward"})  # fmt: skip
    for r in rows:
        assert r.true_error > 0, (r.layer, r.route)
        assert r.true_error <= r.eps <= 1e3 * r.true_error, (r.layer, r.route, r.eps)
        assert r.eps < 1e-4 * r.h_max
    # the asymmetry of M misses most of the true error
    assert sum(r.asymmetry < r.true_error for r in rows) >= 0.9 * len(rows)


def test_float64_bound_is_at_float64_rounding_and_sets_the_floor() -> None:
    torch.manual_seed(0)
    model = MLP((20, 16, 16, 5), "tanh")
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    profile = profile_model(model, x, y, top_k=6, lanczos_steps=0, variants=())
    for layer in profile.layers:
        assert layer.hvp_noise is not None
        assert 0 < layer.hvp_noise < 1e-13 * max(abs(h) for h in layer.h)
        assert layer.n_valid == sum(h > 10 * layer.hvp_noise for h in layer.h)


def test_the_sub_batch_is_a_mean_of_its_own() -> None:
    """min(16, B/8) examples by default, their own normaliser, cast to the asked dtype."""
    batch = make_batch(torch.randn(200, 3), torch.randint(0, 2, (200,)), "cross_entropy",
                       dtype=torch.float64)  # fmt: skip
    sub = cast_batch(sub_batch(batch), torch.float32)
    assert sub.inputs.shape[0] == 16 and sub.normaliser == 16 and sub.n_examples == 16
    assert sub.inputs.dtype == torch.float32 and sub.targets.dtype == torch.long
    small = sub_batch(batch.split(40, limit=1)[0])  # a micro-batch keeps the batch's B
    assert small.inputs.shape[0] == 16 and small.normaliser == 16
    few = make_batch(torch.randn(40, 3), torch.randint(0, 2, (40,)), "cross_entropy",
                     dtype=torch.float64)  # fmt: skip
    assert sub_batch(few).n_examples == 5 and sub_batch(few, 16).normaliser == 16
