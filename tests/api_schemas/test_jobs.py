"""The job and batch specs' validators: one dataset, tags once each, a step per checkpoint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_schemas import BatchSpec, JobSpec


def test_exactly_one_dataset_and_tags_once_each() -> None:
    spec = JobSpec(checkpoint_id="zoo:mlp", dataset="digits", tags=["a", " b", "a"], name=" run ")
    assert spec.tags == ["a", "b"] and spec.name == "run"
    for datasets in ({}, {"dataset": "digits", "dataset_id": "d1"}):
        with pytest.raises(ValidationError, match="exactly one of dataset_id"):
            JobSpec(checkpoint_id="zoo:mlp", **datasets)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        JobSpec(checkpoint_id="zoo:mlp", dataset="digits", tags=["a,b"])  # no commas in a tag
    with pytest.raises(ValidationError):
        JobSpec(checkpoint_id="zoo\x00", dataset="digits")  # no NUL in text
    assert spec.to_settings("mse").loss == "mse" and spec.to_settings().variants == ["ef", "kron"]


def test_a_batch_gives_one_step_per_checkpoint() -> None:
    batch = BatchSpec(checkpoint_ids=["c1", "c2"], steps=[10, 20], dataset="digits", tags=["t"])
    jobs = batch.job_specs()
    assert [(j.checkpoint_id, j.step, j.tags) for j in jobs] == [
        ("c1", 10, ["t"]),
        ("c2", 20, ["t"]),
    ]
    assert [j.step for j in BatchSpec(checkpoint_ids=["c1"], dataset="digits").job_specs()] == [
        None
    ]
    with pytest.raises(ValidationError, match="steps has 1 entries for 2 checkpoint_ids"):
        BatchSpec(checkpoint_ids=["c1", "c2"], steps=[10], dataset="digits")
