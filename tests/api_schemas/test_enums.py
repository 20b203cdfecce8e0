"""Each enumeration is declared once (api_schemas.enums): the models validate exactly its
values, and every runtime tuple of the maths and the service is derived from it."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from api_schemas import (
    JobSpec,
    LayerProgress,
    PreconditionerParams,
    ProfileSettings,
    enums,
)
from service.artifacts import BUILTIN_DATASETS
from service.routers.metrics import JOB_STATES
from workers.curvature import measurement, preconditioner
from workers.data import batch, builtin
from workers.optim import spectral_newton
from workers.zoo import ARCHS


def field_values(model: type[BaseModel], name: str) -> set[Any]:
    """The values a Literal field (optionally ``| None`` or a list of them) accepts."""
    annotation = model.model_fields[name].annotation
    values: set[Any] = set()
    stack = [annotation]
    while stack:
        arg = stack.pop()
        inner = get_args(arg)
        if inner and all(isinstance(v, str) for v in inner):
            values |= set(inner)
        else:
            stack.extend(inner)
    return values


def test_models_validate_the_declared_values() -> None:
    assert field_values(ProfileSettings, "loss") == set(enums.LOSS_NAMES)
    assert field_values(JobSpec, "loss") == set(enums.NAMED_LOSSES)
    assert field_values(JobSpec, "variants") == set(enums.VARIANTS)
    assert field_values(JobSpec, "dtype") == set(enums.DTYPES)
    assert field_values(JobSpec, "dataset") == set(enums.BUILTIN_DATASETS)
    assert field_values(PreconditionerParams, "mode") == set(enums.PRECONDITIONER_MODES)
    assert field_values(LayerProgress, "state") == {"pending", "running", *enums.TERMINAL_STATES}


def test_runtime_tuples_derive_from_the_declarations() -> None:
    assert batch.LOSSES == enums.NAMED_LOSSES
    assert measurement.LOSSES == enums.OUTPUT_LOSSES
    assert {measurement.MODEL_LOSS, measurement.CUSTOM_LOSS} == set(enums.LOSS_NAMES) - set(
        enums.OUTPUT_LOSSES
    )
    assert preconditioner.MODES == spectral_newton.MODES == enums.PRECONDITIONER_MODES
    assert tuple(ARCHS) == enums.ARCHITECTURES
    assert BUILTIN_DATASETS == enums.BUILTIN_DATASETS
    for name in enums.BUILTIN_DATASETS:  # each has its loader
        assert callable(getattr(builtin, f"_{name}"))
    assert JOB_STATES == enums.JOB_STATES
    assert set(enums.JOB_STATES) == set(enums.ACTIVE_STATES) | enums.TERMINAL_STATES
    assert not set(enums.ACTIVE_STATES) & enums.TERMINAL_STATES
    assert ProfileSettings().variants == list(enums.DEFAULT_VARIANTS)


def test_spectral_newton_window_is_the_default_fit_window() -> None:
    defaults = ProfileSettings()
    assert defaults.rank_cutoff == spectral_newton.RANK_CUTOFF
    assert defaults.top_k == spectral_newton.NEWTON_TOP_K


def test_values_outside_an_enumeration_are_refused() -> None:
    with pytest.raises(ValidationError):
        JobSpec(checkpoint_id="zoo:mlp", dataset="digits", loss="custom")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        JobSpec(checkpoint_id="zoo:mlp", dataset="mnist")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown mode"):
        preconditioner.preconditioner_params([1.0], 1.0, 0.0, "muon")
