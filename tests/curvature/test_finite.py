"""NaN/Inf in an input, a parameter or a buffer is named before any measurement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.curvature.finite import check_finite
from workers.intake.errors import NonFiniteError


def test_the_first_non_finite_tensor_is_named_with_its_count() -> None:
    model = nn.BatchNorm1d(3)
    ok = torch.ones(2, 3)
    check_finite(model, {"inputs": ok, "mask": None, "targets": torch.tensor([1, 2])})
    with pytest.raises(NonFiniteError, match=r"^inputs holds 2 non-finite values \(NaN\)"):
        check_finite(model, {"inputs": torch.tensor([float("nan"), 1.0, float("nan")])})
    with torch.no_grad():
        model.running_var[1] = float("inf")
    with pytest.raises(
        NonFiniteError, match=r"^buffer running_var holds 1 non-finite value \(Inf\)"
    ):
        check_finite(model, {"inputs": ok})
