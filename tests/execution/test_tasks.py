"""The Ray task's body, run in this process (no Ray): ``profile_group`` reports the engine's
own profiles of the model its reference names, with provenance, and a layer that fails is
reported alone, in one line, while the rest of its group is profiled."""

from __future__ import annotations

import json

import pytest
import torch

from api_schemas import ProfileSettings
from workers.curvature.engine import profile_layers
from workers.execution.data_cache import DataPayload
from workers.execution.model_cache import ModelReference, clear_model_cache
from workers.execution.prepare import ModelSource, load_model
from workers.execution.tasks import profile_group

CONFIG = {"arch": "mlp", "in_features": 6, "widths": [5], "classes": 4}
SETTINGS = ProfileSettings(top_k=3, lanczos_steps=0, variants=["ggn"], min_fit_points=3)
LAYERS = ["layers.0", "head"]


REFERENCE = ModelReference(ModelSource(zoo_config=dict(CONFIG)), "", seed=0)


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    clear_model_cache()


def _model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model the reference names, as the runner opens it, and a batch."""
    model = load_model(REFERENCE.source, REFERENCE.seed).model
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(16, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def _comparable(profile: dict[str, object]) -> str:
    """The profile as exact JSON (float repr round-trips; NaN kept), wall time left out."""
    return json.dumps({k: v for k, v in profile.items() if k != "wall_seconds"})


def test_profile_group_reports_the_engines_profiles() -> None:
    model, x, y = _model_and_batch()
    expected = profile_layers(model, x, y, LAYERS, SETTINGS)
    entries = profile_group(
        REFERENCE,
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
    _, x, y = _model_and_batch()
    entries = profile_group(
        REFERENCE,
        DataPayload.from_tensors(x, y),
        ["head", "no.such.layer"],
        SETTINGS.model_dump_json(),
    )
    good, bad = entries
    assert good["name"] == "head" and good["error"] is None and good["profile"] is not None
    assert bad["name"] == "no.such.layer" and bad["profile"] is None
    assert bad["error"] and "\n" not in bad["error"]
