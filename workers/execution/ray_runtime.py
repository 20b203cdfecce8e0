"""Starting or joining Ray: an embedded loopback-only local instance, or a cluster by address."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import ray

REPO_ROOT = Path(__file__).resolve().parents[2]
_lock = threading.Lock()


def _runtime_env() -> dict[str, Any]:
    """Workers import ``workers.*`` and ``api_schemas`` from this checkout."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> None:
    """Idempotent. ``address=None``: a local Ray bound to 127.0.0.1 with the dashboard off.

    On Linux a local Ray otherwise listens on the external interface, open to anyone who can
    reach it; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` set before ``ray.init`` keeps every Ray
    process on loopback.
    """
    with _lock:
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {
            "runtime_env": _runtime_env(),
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
        }
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None or address == "local":
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            kwargs.update(address="local", num_cpus=num_cpus, num_gpus=num_gpus)
        else:
            kwargs.pop("include_dashboard")
            kwargs["address"] = address
        ray.init(**kwargs)


def ray_ready() -> bool:
    """True when this process is connected to a Ray cluster with at least one live node."""
    if not ray.is_initialized():
        return False
    try:
        return any(node.get("Alive") for node in ray.nodes())
    except Exception:
        return False


def shutdown_ray() -> None:
    with _lock:
        if ray.is_initialized():
            ray.shutdown()
