"""Case 4: the same profiling job on 1 and 2 local Ray workers; layers per second.

``ray.init(address="local", num_cpus=N, include_dashboard=False)`` (loopback only, through
``workers.execution.init_ray``) and ``run_layer_groups`` with one layer per task, exactly as
the service submits a job. Each run is preceded by one single-threaded gradient in the driver
so a drifting machine speed can be read off (``layers_per_gradient``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import torch

from api_schemas import ProfileSettings
from bench.cases import Setup
from bench.timing import timed


def _run(s: Setup, model32: torch.nn.Module, n_cpus: int, repeats: int) -> dict[str, Any]:
    import ray

    from workers.execution import (
        DataPayload,
        ModelReference,
        init_ray,
        run_layer_groups,
        shutdown_ray,
    )
    from workers.execution.prepare import ModelSource
    from workers.intake import save_checkpoint, sha256_file

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    shutdown_ray()
    t_init, _ = timed(lambda: init_ray("local", num_cpus=n_cpus))
    try:
        stored = save_checkpoint(model32, tempfile.mkdtemp(prefix="curvprof-scaling-"))
        reference = ModelReference(
            ModelSource(path=str(stored)), sha256_file(stored / "model.safetensors")
        )
        model_ref = ray.put(reference)
        data_ref = ray.put(DataPayload.from_tensors(s.x, s.y))
        names = [sp.name for sp in s.specs]
        settings = ProfileSettings(
            loss=s.loss,  # type: ignore[arg-type]
            batch_size=int(s.x.shape[0]),
            top_k=20,
            lanczos_steps=20,
            dtype="float64",
        )
        groups = [[n] for n in names]
        errors: list[str] = []

        def job(gs: list[list[str]]) -> None:
            def on_layer(o: Any) -> None:
                if o.error:
                    errors.append(f"{o.name}: {o.error}")

            run_layer_groups(model_ref, data_ref, gs, settings, on_layer=on_layer)

        # warm-up: start the worker processes (imports, first-touch) on every CPU
        job(groups[: max(n_cpus, 1)] * 1)
        rates, norm = [], []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for _ in range(repeats):
                t_grad, _ = timed(s.full_gradient)
                t_job, _ = timed(lambda: job(groups))
                rates.append(len(names) / t_job)
                norm.append(len(names) * t_grad / t_job)
        finally:
            torch.set_num_threads(threads)
        return {
            "workers": n_cpus,
            "layers": len(names),
            "init_seconds": t_init,
            "layers_per_second": statistics.median(rates),
            "layers_per_gradient": statistics.median(norm),
            "rates": rates,
            "errors": errors[:5],
        }
    finally:
        shutdown_ray()


def run_case(s: Setup, model32: torch.nn.Module, repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    one = _run(s, model32, 1, repeats)
    two = _run(s, model32, 2, repeats)
    return {
        "model": s.name,
        "batch": int(s.x.shape[0]),
        "one": one,
        "two": two,
        "speedup": two["layers_per_second"] / one["layers_per_second"],
        "speedup_drift_corrected": two["layers_per_gradient"] / one["layers_per_gradient"],
        "wall_seconds": time.perf_counter() - started,
    }
