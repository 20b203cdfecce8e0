"""The client: CURVPROF_URL / CURVPROF_TOKEN, and retries against real loopback servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from service.client import ApiError, CurvprofClient
from service.embedded import free_port
from tests.service.helpers import SPEC


def test_url_and_token_from_the_environment(make_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_tokens=["secret"], open_reads=False)
    monkeypatch.setenv("CURVPROF_URL", server.url)
    monkeypatch.setenv("CURVPROF_TOKEN", "secret")
    with CurvprofClient() as client:
        job = client.submit({"checkpoint_id": "zoo:mlp", **SPEC})
        assert client.job(job.id).id == job.id
    monkeypatch.setenv("CURVPROF_TOKEN", "wrong")
    with CurvprofClient() as client, pytest.raises(ApiError) as err:
        client.jobs()
    assert err.value.status == 401


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 (then 429) before a 200, counting the requests per path."""

    counts: ClassVar[dict[str, int]] = {}
    failures = 2

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        n = Flaky.counts[self.path] = Flaky.counts.get(self.path, 0) + 1
        if n <= Flaky.failures:
            status, body = (503 if n == 1 else 429), {"error": {"message": "busy", "status": 503}}
        else:
            status, body = 200, {"items": [], "next_cursor": None}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.counts = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_retries_busy_answers_on_idempotent_calls_only(flaky: str) -> None:
    with CurvprofClient(flaky, backoff=0.01) as client:
        assert client.jobs().items == []  # GET: 503, 429, then 200
        assert Flaky.counts["/v1/jobs?limit=50"] == 3
        with pytest.raises(ApiError) as err:  # POST without a key: not retried
            client.request("POST", "/v1/jobs", json={})
        assert err.value.status == 503 and Flaky.counts["/v1/jobs"] == 1
        client.request("POST", "/v1/batches", json={}, headers={"Idempotency-Key": "k"})
        assert Flaky.counts["/v1/batches"] == 3
    with CurvprofClient(flaky, backoff=0.01, retries=1) as client, pytest.raises(ApiError):
        client.request("GET", "/v1/other")  # 503, 429: out of retries
    assert Flaky.counts["/v1/other"] == 2


def test_retries_a_connection_that_could_not_be_made() -> None:
    port = free_port()
    server = ThreadingHTTPServer  # started late, on the port the client already uses
    Flaky.counts, Flaky.failures = {}, 0
    holder: list[ThreadingHTTPServer] = []

    def start_late() -> None:
        time.sleep(0.4)
        httpd = server(("127.0.0.1", port), Flaky)
        holder.append(httpd)
        httpd.serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        with CurvprofClient(f"http://127.0.0.1:{port}", backoff=0.2, retries=5) as client:
            assert client.jobs().items == []
        with CurvprofClient(f"http://127.0.0.1:{free_port()}", backoff=0.01, retries=2) as c:
            with pytest.raises(Exception) as exc:
                c.jobs()
            assert "Connect" in type(exc.value).__name__
    finally:
        Flaky.failures = 2
        for httpd in holder:
            httpd.shutdown()
            httpd.server_close()
