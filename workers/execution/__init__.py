"""Ray execution of profiling jobs: a job becomes tasks per layer group.

No HTTP and no SQL here: the service passes callbacks that store each finished layer.
Ray is imported on first use of a name that needs it (``prepare`` does not).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.execution.data_cache import DataPayload, DataReference, cached_dataset
    from workers.execution.model_cache import ModelReference, cached_model, models_built
    from workers.execution.ray_runtime import gpus_per_task, init_ray, ray_ready, shutdown_ray
    from workers.execution.scheduler import LayerOutcome, run_layer_groups
    from workers.execution.tasks import profile_group

_HOMES = {
    "gpus_per_task": "ray_runtime",
    "init_ray": "ray_runtime",
    "ray_ready": "ray_runtime",
    "shutdown_ray": "ray_runtime",
    "LayerOutcome": "scheduler",
    "run_layer_groups": "scheduler",
    "DataPayload": "data_cache",
    "DataReference": "data_cache",
    "cached_dataset": "data_cache",
    "ModelReference": "model_cache",
    "cached_model": "model_cache",
    "models_built": "model_cache",
    "profile_group": "tasks",
}

__all__ = [
    "DataPayload",
    "DataReference",
    "LayerOutcome",
    "ModelReference",
    "cached_dataset",
    "cached_model",
    "gpus_per_task",
    "init_ray",
    "models_built",
    "profile_group",
    "ray_ready",
    "run_layer_groups",
    "shutdown_ray",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"workers.execution.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
