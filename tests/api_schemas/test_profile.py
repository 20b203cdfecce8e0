"""The profile wire models' validators: undefined numbers travel as null, never NaN or Inf."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from api_schemas import Decomposition, LayerProfile, PreconditionerParams


def _layer(**fields: object) -> LayerProfile:
    return LayerProfile.model_validate(
        {
            "name": "fc",
            "kind": "linear",
            "parameter": "fc.weight",
            "shape": (2, 3),
            "sigma": [1.0],
            "h": [0.5],
            **fields,
        }
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_scalars_become_null(value: float) -> None:
    layer = _layer(alpha=value, s_eig=value, hvp_noise=value, pr_h=value, gamma=1.5)
    assert layer.alpha is None and layer.s_eig is None and layer.hvp_noise is None
    assert layer.pr_h is None and layer.gamma == 1.5
    assert Decomposition(alpha_exact=value, beta=0.5).alpha_exact is None
    params = PreconditionerParams(mode="paper", alpha=value, kappa=1.0, damping=value)
    assert params.alpha is None and params.damping is None and params.kappa == 1.0
    assert "NaN" not in layer.model_dump_json() and "Infinity" not in layer.model_dump_json()


def test_confidence_intervals_are_whole_or_null() -> None:
    assert _layer(alpha_ci_t=(1.0, 2.0)).alpha_ci_t == (1.0, 2.0)
    assert _layer(alpha_ci_t=[1.0, math.nan]).alpha_ci_t is None
    assert _layer(alpha_ci_boot=None).alpha_ci_boot is None
    with pytest.raises(ValidationError):
        _layer(alpha_ci_t=(1.0, 2.0, 3.0))
    with pytest.raises(ValidationError):
        _layer(unknown_field=1.0)  # a layer carries only the fields it declares
