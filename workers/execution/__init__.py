"""Ray execution of profiling jobs: a job becomes tasks per layer group.

No HTTP and no SQL here: the service passes callbacks that store each finished layer.
"""

from workers.execution.ray_runtime import gpus_per_task, init_ray, ray_ready, shutdown_ray
from workers.execution.scheduler import LayerOutcome, run_layer_groups
from workers.execution.tasks import DataPayload, ModelPayload, build_model, profile_group

__all__ = [
    "DataPayload",
    "LayerOutcome",
    "ModelPayload",
    "build_model",
    "gpus_per_task",
    "init_ray",
    "profile_group",
    "ray_ready",
    "run_layer_groups",
    "shutdown_ray",
]
