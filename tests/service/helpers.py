"""Small fixtures of data: zoo checkpoints on disk, synthetic layer profiles."""

from __future__ import annotations

import signal
import socket
import subprocess
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


def partial_upload(url: str, file_bytes: int, *, chunked: bool, total: int) -> socket.socket:
    """Open a multipart upload by hand and send ``file_bytes`` of its file part."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + total}"
    sock.sendall(
        f"POST /v1/datasets HTTP/1.1\r\nHost: {host}\r\n{length}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )

    def send(data: bytes) -> None:
        sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    send(head)
    block = b"\0" * 65536
    for _ in range(file_bytes // len(block)):
        send(block)
    return sock


def partial_json_post(url: str, path: str, body: bytes, *, total: int) -> socket.socket:
    """Open a JSON POST by hand that declares ``total`` bytes and sends only ``body``."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n"
        "Content-Type: application/json\r\n\r\n".encode()
        + body
    )
    return sock


def stop_serving(proc: subprocess.Popen[bytes]) -> None:
    """Stop a ``curvprof serve`` child as an operator would (SIGINT), killing it only if it
    has not stopped within a minute."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
