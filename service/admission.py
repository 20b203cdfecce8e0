"""Admission: at most ``slots`` requests inside the application at once, the rest queued.

Why (docs/reliability.md, "The thread and pool model"): every request inside the app may
hold one pooled connection, and it holds it until its session is closed on the event loop,
*after* its worker thread is free again. Without a bound on the requests inside, a busy
event loop lets finished-but-unclosed sessions pile up beyond the worker threads (80
connections were seen checked out by 40 threads) until checkouts time out. With the gate,
requests inside ≤ ``slots`` ≤ the pool's connections, so a checkout never waits.

A request beyond ``slots`` waits in first-come order. One that has waited ``queue_timeout``
seconds is answered 503 with ``Retry-After``: the server is saturated and says so, before
reading the body or touching the database. Liveness (``/healthz``) is never queued.

Uploads (``POST`` to ``upload_paths``) pass a gate of their own, ``upload_slots`` wide, with
the same queue rule: a body arrives at the client's pace, so a slow upload must not hold
one of the requests' slots while it does (a few slow clients would fill the gate). Their
bodies are held to a minimum rate meanwhile (``service.upload``: 408 below it).
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from starlette.types import ASGIApp, Receive, Scope, Send

from service.problems import RETRY_AFTER_SECONDS, problem

log = logging.getLogger("curvprof.app")
NEVER_QUEUED = frozenset({"/healthz"})


class AdmissionGate:
    """Pure ASGI middleware: a first-come semaphore of ``slots`` around the application."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        slots: int,
        queue_timeout: float,
        upload_slots: int = 1,
        upload_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.slots = slots
        self.upload_slots = upload_slots
        self.upload_paths = upload_paths
        self.queue_timeout = queue_timeout
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[bool, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()
        self.waiting = 0

    def _semaphore(self, upload: bool) -> asyncio.Semaphore:
        """One semaphore per lane and event loop (tests may serve one app from several)."""
        lanes = self._semaphores.setdefault(asyncio.get_running_loop(), {})
        if upload not in lanes:
            lanes[upload] = asyncio.Semaphore(self.upload_slots if upload else self.slots)
        return lanes[upload]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_QUEUED:
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] in self.upload_paths
        semaphore = self._semaphore(upload)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await semaphore.acquire()
        except TimeoutError:
            log.warning(
                "queue timeout on %s %s: %d %s inside, %d waiting",
                scope["method"],
                scope["path"],
                self.upload_slots if upload else self.slots,
                "uploads" if upload else "requests",
                self.waiting,
            )
            response = problem(
                503,
                f"the server is saturated (queued {self.queue_timeout:g} s); retry later",
                instance=scope["path"],
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            semaphore.release()
