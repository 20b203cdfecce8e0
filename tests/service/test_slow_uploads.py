"""Slow uploads on a live server (service/admission.py, service/upload.py): they wait in a
lane of their own, not in a slot of the request gate; a body that arrives slower than
``upload_min_bytes_per_s`` (or stops) is cut with a 408 problem and its partial file
removed; uploads beyond ``upload_slots`` queue and get the 503 of a saturated server."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from service.embedded import EmbeddedServer
from tests.service.helpers import partial_upload


def _read_head(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return head


def _trickle(sock: socket.socket, stop: threading.Event) -> None:
    """16 bytes every 0.1 s (160 bytes/s) until the server closes or ``stop``."""
    while not stop.wait(0.1):
        try:
            sock.sendall(b"\0" * 16)
        except OSError:
            return


def _tmp_files(server: EmbeddedServer) -> list[str]:
    tmp_dir = server.app.state.services.artifacts.tmp_dir
    return sorted(p.name for p in tmp_dir.iterdir()) if tmp_dir.exists() else []


def test_slow_uploads_hold_no_request_slot_and_are_cut_with_408(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(
        api_threads=1,
        queue_timeout_s=1.0,
        upload_slots=2,
        upload_min_bytes_per_s=4096,
        upload_rate_grace_s=5.0,
    )
    stalled = partial_upload(server.url, 0, chunked=False, total=1 << 20)  # then nothing
    trickling = partial_upload(server.url, 0, chunked=False, total=1 << 20)
    stop = threading.Event()
    sender = threading.Thread(target=_trickle, args=(trickling, stop), daemon=True)
    sender.start()
    started = time.monotonic()
    try:
        while len(_tmp_files(server)) < 2:  # both bodies are being received
            assert time.monotonic() - started < 4
            time.sleep(0.05)
        for _ in range(5):  # the one request slot is free: the uploads are in their own lane
            assert httpx.get(server.url + "/v1/jobs", timeout=30).status_code == 200
        assert len(_tmp_files(server)) == 2  # ... while both uploads were still in flight
        for sock in (stalled, trickling):
            head = _read_head(sock, timeout=30)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert b"application/problem+json" in head
        assert 5.0 <= time.monotonic() - started < 30
        assert _tmp_files(server) == []  # both partial files removed
        assert httpx.get(server.url + "/v1/jobs", timeout=30).status_code == 200
    finally:
        stop.set()
        stalled.close()
        trickling.close()


def test_uploads_beyond_their_slots_queue_then_get_503(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(queue_timeout_s=0.5, upload_slots=1, upload_rate_grace_s=60.0)
    holding = partial_upload(server.url, 65536, chunked=False, total=1 << 20)
    try:
        time.sleep(0.2)
        files = {"file": ("d.npz", b"\0" * 100)}
        response = httpx.post(server.url + "/v1/datasets", files=files, timeout=30)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert httpx.get(server.url + "/v1/jobs", timeout=30).status_code == 200
    finally:
        holding.close()
    time.sleep(0.5)  # the server notices the closed connection and removes the partial file
    assert _tmp_files(server) == []


def test_the_408_is_declared_on_both_upload_routes(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    paths = httpx.get(server.url + "/v1/openapi.json", timeout=30).json()["paths"]
    for path in ("/v1/checkpoints", "/v1/datasets"):
        assert "408" in paths[path]["post"]["responses"]
