"""The Ray task's body, run in this process (no Ray): payloads rebuild the model and data
exactly, ``profile_group`` reports the engine's own profiles with provenance, and a layer
that fails is reported alone, in one line, while the rest of its group is profiled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from api_schemas import ProfileSettings
from workers.curvature.engine import profile_layers
from workers.execution.tasks import DataPayload, ModelPayload, build_model, profile_group
from workers.zoo import build_model as zoo_build

CONFIG = {"arch": "mlp", "in_features": 6, "widths": [5], "classes": 4}
SETTINGS = ProfileSettings(top_k=3, lanczos_steps=0, variants=["ggn"], min_fit_points=3)
LAYERS = ["layers.0", "head"]


def _model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = zoo_build(CONFIG).eval()
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(16, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def _comparable(profile: dict[str, object]) -> str:
    """The profile as exact JSON (float repr round-trips; NaN kept), wall time left out."""
    return json.dumps({k: v for k, v in profile.items() if k != "wall_seconds"})


def test_model_payload_rebuilds_the_same_function() -> None:
    model, x, _ = _model_and_batch()
    rebuilt = build_model(ModelPayload.from_model(model, CONFIG))
    assert not rebuilt.training
    assert torch.equal(rebuilt(x), model(x))


def test_empty_model_payload_is_refused() -> None:
    with pytest.raises(ValueError, match="neither config"):
        build_model(ModelPayload())


def test_data_payload_round_trips_and_owns_its_arrays() -> None:
    _, x, y = _model_and_batch()
    mask = torch.ones(16, dtype=torch.bool)
    payload = DataPayload.from_tensors(x, y, mask)
    inputs, targets, got_mask = payload.tensors()
    assert torch.equal(inputs, x) and torch.equal(targets, y)
    assert got_mask is not None and torch.equal(got_mask, mask)
    inputs.zero_()  # the task's tensors are copies: the payload is untouched
    np.testing.assert_array_equal(payload.inputs, x.numpy())
    assert DataPayload.from_tensors(x, y).tensors()[2] is None


def test_profile_group_reports_the_engines_profiles() -> None:
    model, x, y = _model_and_batch()
    expected = profile_layers(model, x, y, LAYERS, SETTINGS)
    entries = profile_group(
        ModelPayload.from_model(model, CONFIG),
        DataPayload.from_tensors(x, y),
        LAYERS,
        SETTINGS.model_dump_json(),
    )
    assert [e["name"] for e in entries] == LAYERS
    for entry, reference in zip(entries, expected, strict=True):
        assert entry["error"] is None and entry["device"] == "cpu" and entry["hostname"]
        assert entry["wall_seconds"] is not None and entry["wall_seconds"] >= 0
        profile = entry["profile"]
        assert _comparable(profile) == _comparable(reference.model_dump(mode="python"))


def test_a_failing_layer_fails_alone() -> None:
    model, x, y = _model_and_batch()
    entries = profile_group(
        ModelPayload.from_model(model, CONFIG),
        DataPayload.from_tensors(x, y),
        ["head", "no.such.layer"],
        SETTINGS.model_dump_json(),
    )
    good, bad = entries
    assert good["name"] == "head" and good["error"] is None and good["profile"] is not None
    assert bad["name"] == "no.such.layer" and bad["profile"] is None
    assert bad["error"] and "\n" not in bad["error"]
