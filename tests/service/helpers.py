"""Small fixtures of data: zoo checkpoints on disk, synthetic layer profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from api_schemas import LayerProfile, ProfileSettings, Provenance

MLP_CONFIG: dict[str, Any] = {"arch": "mlp", "in_features": 64, "widths": [32, 32], "classes": 10}
SPEC: dict[str, Any] = {
    "dataset": "digits",
    "batch_size": 128,
    "top_k": 10,
    "lanczos_steps": 5,
    "dtype": "float64",
    "seed": 0,
}


def write_checkpoint(directory: Path, config: dict[str, Any] = MLP_CONFIG, seed: int = 0) -> Path:
    """A zoo model saved by workers.intake (config.json + model.safetensors); returns the
    weights path."""
    from workers.intake.checkpoints import save_checkpoint
    from workers.zoo import build_model

    torch.manual_seed(seed)
    out = save_checkpoint(build_model(config), directory)
    return out / "model.safetensors"


def fake_profile(name: str, kind: str = "linear", **values: Any) -> LayerProfile:
    base: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "parameter": f"{name}.weight",
        "shape": (4, 4),
        "k": 3,
        "sigma": [3.0, 2.0, 1.0],
        "h": [0.9, 0.4, 0.1],
        "eigenvalues": [1.0, 0.5],
    }
    base.update(values)
    return LayerProfile(**base)


def store_layer(session: Any, job: Any, profile: LayerProfile, **provenance: Any) -> bool:
    """Store ``profile`` for ``job`` as the job runner does, with a Provenance made of
    ``provenance`` (float64, K = the profile's k)."""
    from service.store import repo

    settings = ProfileSettings(top_k=max(profile.k, 1))
    return repo.record_layer_result(session, job, profile, Provenance(**provenance), settings)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
