"""Task resources: GPUs per layer task, and the loopback-only embedded Ray."""

from __future__ import annotations

import ray

from workers.execution import gpus_per_task


def test_gpus_per_task_follows_the_cluster(ray_cluster: None) -> None:
    assert ray.cluster_resources().get("GPU", 0) == 0
    assert gpus_per_task(None) == 0.0  # a CPU cluster: tasks ask for a CPU
    assert gpus_per_task(0.25) == 0.25  # fractional GPUs when configured


def test_embedded_ray_listens_on_loopback_only(ray_cluster: None) -> None:
    addresses = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    assert addresses == {"127.0.0.1"}


def test_embedded_ray_processes_listen_on_loopback_only(ray_cluster: None) -> None:
    import psutil

    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    assert ray_pids, "the embedded Ray runs no child process"
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    listening = [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ray_pids
    ]
    assert listening and all(ip in loopback for _, ip, _ in listening), listening
