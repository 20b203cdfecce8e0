"""The job spec carries every ProfileSettings field (declared once, in MeasurementSettings),
in the flat JSON body of POST /v1/jobs and /v1/batches, and ``to_settings`` passes each on."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api_schemas import BatchSpec, JobSpec, MeasurementSettings, ProfileSettings

# one value per ProfileSettings field, each unlike its default (``mode`` has one value only)
CHANGED: dict[str, Any] = {
    "loss": "mse",
    "batch_size": 64,
    "micro_batch_size": 16,
    "top_k": 7,
    "lanczos_steps": 3,
    "dtype": "float32",
    "seed": 5,
    "layers": "fc*",
    "variants": ["ggn", "mc"],
    "rank_cutoff": 1e-4,
    "min_fit_points": 4,
    "mode": "eval",
    "hvp_diagnostics": False,
}


def test_every_settings_field_is_listed_here() -> None:
    assert set(CHANGED) == set(ProfileSettings.model_fields)
    defaults = ProfileSettings()
    assert [k for k, v in CHANGED.items() if getattr(defaults, k) == v] == ["mode"]


def test_every_settings_field_is_reachable_from_the_flat_job_body() -> None:
    spec = JobSpec.model_validate({"checkpoint_id": "zoo:mlp", "dataset": "digits", **CHANGED})
    assert spec.to_settings().model_dump() == ProfileSettings(**CHANGED).model_dump()
    assert set(MeasurementSettings.model_fields) == set(ProfileSettings.model_fields) - {"loss"}


def test_flat_body_round_trips_and_unknown_fields_are_refused() -> None:
    spec = JobSpec.model_validate({"checkpoint_id": "zoo:mlp", "dataset": "digits", **CHANGED})
    body = spec.model_dump(mode="json")
    assert {k: body[k] for k in CHANGED} == CHANGED  # flat: no nested settings object
    assert JobSpec.model_validate(body) == spec
    with pytest.raises(ValidationError, match="extra"):
        JobSpec.model_validate({"checkpoint_id": "zoo:mlp", "dataset": "digits", "kfac": 1})


def test_the_default_loss_stands_in_only_when_none_is_named() -> None:
    unnamed = JobSpec(checkpoint_id="zoo:gpt", dataset="text")
    assert unnamed.to_settings("lm").loss == "lm"
    assert unnamed.to_settings().loss == "cross_entropy"
    named = JobSpec(checkpoint_id="zoo:gpt", dataset="text", loss="mse")
    assert named.to_settings("lm").loss == "mse"


def test_each_job_of_a_batch_carries_the_batch_settings() -> None:
    settings = {k: v for k, v in CHANGED.items() if k != "loss"}
    spec = BatchSpec.model_validate(
        {"checkpoint_ids": ["a", "b"], "steps": [1, 2], "dataset_id": "d", **settings}
    )
    jobs = spec.job_specs()
    assert [(j.checkpoint_id, j.step) for j in jobs] == [("a", 1), ("b", 2)]
    for job in jobs:
        assert job.to_settings("mse") == ProfileSettings(**CHANGED)


@pytest.mark.parametrize(
    "field,value",
    [
        ("rank_cutoff", -1e-3),
        ("rank_cutoff", 1.0),
        ("rank_cutoff", float("nan")),
        ("min_fit_points", 2),
        ("top_k", 0),
        ("batch_size", 0),
        ("mode", "train"),
    ],
)
def test_out_of_range_settings_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"checkpoint_id": "zoo:mlp", "dataset": "digits", field: value})
