"""Profile.to_pandas(): one row per layer, each cell equal to the model's own field."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workers.curvature import profile_model

pd = pytest.importorskip("pandas")


def tiny_profile():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 4)
    )
    x, y = torch.randn(64, 6), torch.randint(0, 4, (64,))
    return profile_model(model, x, y, top_k=10, lanczos_steps=6, dtype=torch.float64)


def same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_one_row_per_layer_with_every_scalar_flag_and_array() -> None:
    profile = tiny_profile()
    frame = profile.to_pandas()
    assert list(frame["name"]) == [layer.name for layer in profile.layers]
    flags = sorted({f for layer in profile.layers for f in layer.flags})
    for i, layer in enumerate(profile.layers):
        row = frame.iloc[i]
        for field in ("alpha", "r2_alpha", "gamma", "s", "predicted_s", "s_eig", "pr_h", "k"):
            assert same(row[field], getattr(layer, field)), field
        for field in ("triangle_relative_error_unsorted", "triangle_bound", "n_valid"):
            assert same(row[field], getattr(layer, field)), field
        assert (row["shape_m"], row["shape_n"]) == layer.shape
        ci = layer.alpha_ci_t or (None, None)
        assert same(row["alpha_ci_t_lo"], ci[0]) and same(row["alpha_ci_t_hi"], ci[1])
        assert layer.lanczos is not None
        assert row["lanczos_n_converged"] == layer.lanczos.n_converged
        for model, value in layer.bic.items():
            assert row[f"bic_{model}"] == value
        assert list(row["flags"]) == layer.flags
        for flag in flags:
            assert bool(row[f"flag_{flag}"]) == (flag in layer.flags)
    assert "sigma" not in frame.columns  # arrays only on request
    with_arrays = profile.to_pandas(arrays=True)
    for i, layer in enumerate(profile.layers):
        np.testing.assert_array_equal(with_arrays["sigma"].iloc[i], layer.sigma)
        np.testing.assert_array_equal(with_arrays["h"].iloc[i], layer.h)
        assert layer.lanczos is not None
        np.testing.assert_array_equal(
            with_arrays["lanczos_eigenvalues"].iloc[i], layer.lanczos.eigenvalues
        )
    # the α column sorts and filters like any other
    best = frame.sort_values("alpha", ascending=False).iloc[0]
    assert best["alpha"] == max(layer.alpha for layer in profile.layers if layer.alpha is not None)
