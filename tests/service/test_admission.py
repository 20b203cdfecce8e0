"""The admission gate (service/admission.py) on a live server: requests beyond
``api_threads`` queue, the pool is never asked for more connections than requests inside,
and a request that has queued ``queue_timeout_s`` gets 503 with ``Retry-After``. (On
PostgreSQL the sessions are closed on threads of their own: the peak still holds.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import event

from service.embedded import EmbeddedServer
from tests.service.helpers import partial_json_post


def _max_checked_out(server: EmbeddedServer) -> Callable[[], int]:
    """The most connections of the API pool checked out at once from now on."""
    engine = server.app.state.services.engine
    lock, held, peak = threading.Lock(), [0], [0]

    @event.listens_for(engine, "checkout")
    def _out(*_: Any) -> None:
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])

    @event.listens_for(engine, "checkin")
    def _in(*_: Any) -> None:
        with lock:
            held[0] -= 1

    return lambda: peak[0]


async def _burst(url: str, clients: int) -> list[int]:
    async def one(http: httpx.AsyncClient, i: int) -> int:
        path = "/v1/jobs?limit=50" if i % 2 else "/v1/layers?view=brief&sort=-alpha"
        return (await http.get(path)).status_code

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        return list(await asyncio.gather(*(one(http, i) for i in range(clients))))


def test_requests_beyond_the_slots_queue_and_hold_no_connection(make_server, db_url) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_threads=3, db_url=db_url)
    peak = _max_checked_out(server)
    # a thread of its own: an earlier test (the browser's sync API) may own this thread's loop
    with ThreadPoolExecutor(1) as runner:
        statuses = runner.submit(asyncio.run, _burst(server.url, 120)).result()
    assert statuses == [200] * 120
    assert 1 <= peak() <= 3


def test_a_request_queued_too_long_is_503_with_retry_after(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_threads=1, queue_timeout_s=0.5)
    # a JSON body that never ends holds the one slot (an upload would take its own lane)
    upload = partial_json_post(server.url, "/v1/jobs", b'{"checkpoint_id": ', total=1 << 10)
    try:
        response = httpx.get(server.url + "/v1/jobs", timeout=30)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        assert response.json()["detail"].startswith("the server is saturated")
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200  # never queued
    finally:
        upload.close()
    assert httpx.get(server.url + "/v1/jobs", timeout=30).status_code == 200
