"""workers.execution.local: a profile on this machine is the engine's profile of the prepared
batch, with its provenance; the device is resolved; outputs are written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from api_schemas import ProfileSettings
from workers.curvature.engine import profile_layers
from workers.execution.local import profile_prepared, resolve_device, write_atomically
from workers.execution.prepare import DataSource, ModelSource, prepare

CONFIG = {"arch": "mlp", "in_features": 64, "widths": [6], "classes": 10}
SETTINGS = ProfileSettings(
    batch_size=32, top_k=3, lanczos_steps=0, variants=["ggn"], min_fit_points=3
)


def test_a_local_profile_is_the_engines_on_the_prepared_batch() -> None:
    prepared = prepare(SETTINGS, ModelSource(zoo_config=dict(CONFIG)), DataSource("digits"))
    profile = profile_prepared(prepared)
    batch = prepared.batch
    direct = profile_layers(
        prepared.model, batch.inputs, batch.targets, prepared.names, prepared.settings
    )
    assert [layer.name for layer in profile.layers] == prepared.names
    for mine, theirs in zip(profile.layers, direct, strict=True):
        assert mine.sigma == theirs.sigma and mine.h == theirs.h
    assert profile.provenance.data_indices == prepared.provenance.data_indices
    assert profile.provenance.data_sha256 == batch.sha256


def test_auto_device_is_a_gpu_only_when_there_is_one() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_an_output_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "p.json"
    write_atomically(path, b'{"a": 1}')
    assert json.loads(path.read_text()) == {"a": 1}

    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["p.json"]
