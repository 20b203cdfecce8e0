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


LOOPBACK = "127.0.0.1"


def _loopback_only() -> None:
    """Keep every process of a local Ray on 127.0.0.1.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; the processes it spawns
    read it from their environment. Setting the variable here covers the children, and the
    driver's already-imported constant is aligned with it (when ray was imported first, as
    in most programs, the variable alone leaves the GCS and raylet on the external address).
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


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
            _loopback_only()
            kwargs.update(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                _node_ip_address=LOOPBACK,
            )
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


def gpus_per_task(configured: float | None) -> float:
    """GPUs a layer task asks for: the configured value, else 1 when the cluster has GPUs."""
    if configured is not None:
        return configured
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
