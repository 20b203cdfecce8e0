"""The Ray task: open the job's model and data by reference (each read once per worker
process, ``model_cache`` and ``data_cache``), profile a group of layers."""

from __future__ import annotations

import socket
import time
from typing import Any

import ray
import torch

from api_schemas import ProfileSettings
from workers.execution.data_cache import BatchSource
from workers.execution.model_cache import ModelReference, cached_model
from workers.versions import device_label


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def profile_group(
    model_reference: ModelReference,
    data: BatchSource,
    layer_names: list[str],
    settings_json: str,
) -> list[dict[str, Any]]:
    """Profile ``layer_names``; one entry per layer: profile JSON or error, plus provenance.

    If the group fails as a whole, each layer is retried alone so one bad layer fails alone.
    """
    from workers.curvature.engine import profile_layers

    settings = ProfileSettings.model_validate_json(settings_json)
    device = task_device()
    where = {
        "node_id": _node_id(),
        "hostname": socket.gethostname(),
        "device": device_label(device),
    }
    try:
        inputs, targets, mask = data.tensors()
        model = cached_model(model_reference, device)
    except Exception as exc:  # a file is missing or not the one the job was prepared from
        return [_error_entry(name, exc, where) for name in layer_names]

    def run(names: list[str]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        profiles = profile_layers(model, inputs, targets, names, settings, attention_mask=mask)
        each = (time.perf_counter() - started) / max(len(names), 1)
        return [
            {
                "name": p.name,
                "profile": p.model_dump(mode="python"),
                "error": None,
                "wall_seconds": p.wall_seconds if p.wall_seconds is not None else each,
                **where,
            }
            for p in profiles
        ]

    try:
        return run(list(layer_names))
    except Exception as exc:
        if len(layer_names) == 1:
            return [_error_entry(layer_names[0], exc, where)]
    out = []
    for name in layer_names:
        try:
            out.extend(run([name]))
        except Exception as exc:
            out.append(_error_entry(name, exc, where))
    return out


def _error_entry(name: str, exc: BaseException, where: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "profile": None, "error": _first_line(exc), "wall_seconds": None, **where}


def task_device() -> torch.device:
    """The GPU Ray assigned to this task (it sets CUDA_VISIBLE_DEVICES), else the CPU.
    The engine computes wherever the model's weights live."""
    try:  # outside Ray (the task body run in-process) ray.get_gpu_ids() would start one
        has_gpu = ray.is_initialized() and bool(ray.get_gpu_ids())
    except Exception:
        has_gpu = False
    if has_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _node_id() -> str | None:
    if not ray.is_initialized():  # ray.get_runtime_context() would start a local Ray
        return None
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return None


def profile_group_announced(
    ledger: Any,
    key: str,
    model_reference: ModelReference,
    data: BatchSource,
    layer_names: list[str],
    settings_json: str,
) -> list[dict[str, Any]]:
    """:func:`profile_group`, announcing this attempt to the driver's ledger first."""
    from workers.execution.attempts import announce

    announce(ledger, key)
    return profile_group(model_reference, data, layer_names, settings_json)


profile_group_remote = ray.remote(profile_group_announced)
