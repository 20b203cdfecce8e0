"""Errors as RFC 9457 problem details: the responses, their OpenAPI declaration, the handlers.

Every error the API gives is an ``application/problem+json`` :class:`api_schemas.Problem`:
HTTP errors raised by the routers, validation errors (with one ``errors`` item per failed
check), refused cursors (400), conflicts (409), upload errors, NUL characters anywhere in the
path or query (422), and saturation (503 with ``Retry-After``): a full connection pool or a
busy SQLite file. Nothing the client sends is answered with a 500; an unexpected exception
still is, with its type only, and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api_schemas import PROBLEM_MEDIA_TYPE, Problem, ProblemItem

log = logging.getLogger("curvprof.app")
RETRY_AFTER_SECONDS = 1
MAX_ITEMS = 20


def problem(
    status: int,
    detail: str | None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[ProblemItem] | None = None,
) -> JSONResponse:
    """The problem document of ``status`` (title: the HTTP status phrase)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = Problem(title=title, status=status, detail=detail, instance=instance, errors=errors)
    return JSONResponse(
        body.body(), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring ``statuses`` as problem documents."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        if status == 503:
            entry["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
            }
        out[status] = entry
    return out


def idempotent_submission(model: type[BaseModel], *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a submission with an Idempotency-Key: 200 with ``model``
    for a repeated request, and ``errors`` (400 and 409 always) as problem documents."""
    noun = model.__name__.lower()
    replayed = f"the {noun} of an earlier request with this Idempotency-Key and the same body"
    return {200: {"model": model, "description": replayed}, **problems(400, 409, *errors)}


def move_problem_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI files a ``model`` under the route's media type (application/json, text/plain,
    image/png, ...); error bodies are problem+json only."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status)[0] in "45" and PROBLEM_MEDIA_TYPE in content:
                    found = next((c["schema"] for c in content.values() if "schema" in c), None)
                    if found is not None:
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": found}}
    return schema


def _items(exc: RequestValidationError) -> list[ProblemItem]:
    items = []
    for err in exc.errors()[:MAX_ITEMS]:
        loc = [x if isinstance(x, int) else str(x) for x in err.get("loc", ())]
        items.append(ProblemItem(loc=loc, msg=str(err.get("msg")), type=str(err.get("type"))))
    return items


def _summary(items: list[ProblemItem]) -> str:
    parts = []
    for item in items[:5]:
        loc = ".".join(str(x) for x in item.loc if x not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {item.msg}" if loc else item.msg)
    return "invalid request: " + "; ".join(parts)


def _is_busy(exc: OperationalError) -> bool:
    """SQLite's lock timeout, or a database that cannot be reached: try again later."""
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text or "connect" in text or "timeout" in text


Handler = Callable[[Request, Any], Awaitable[JSONResponse]]


def install_problem_handlers(app: FastAPI, extra: dict[type[Exception], Handler]) -> None:
    """The handlers above, plus ``extra`` (domain errors), and the NUL guard."""
    unavailable = {"Retry-After": str(RETRY_AFTER_SECONDS)}

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return problem(exc.status_code, str(exc.detail), instance=request.url.path, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = _items(exc)
        return problem(422, _summary(items), instance=request.url.path, errors=items)

    @app.exception_handler(PoolTimeout)
    async def _saturated(request: Request, exc: PoolTimeout) -> JSONResponse:
        pool = getattr(getattr(request.app.state, "services", None), "engine", None)
        status = pool.pool.status() if pool is not None else "?"
        log.warning("pool saturated on %s %s: %s", request.method, request.url.path, status)
        detail = "the server is saturated; retry later"
        return problem(503, detail, instance=request.url.path, headers=unavailable)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        if not _is_busy(exc):
            return await _unexpected(request, exc)
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc.orig)
        detail = "the database is busy; retry later"
        return problem(503, detail, instance=request.url.path, headers=unavailable)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        log.info("value refused by the database on %s: %s", request.url.path, exc.orig)
        detail = "a parameter value that the database cannot hold"
        return problem(422, detail, instance=request.url.path)

    for kind, handler in extra.items():
        app.add_exception_handler(kind, handler)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, f"internal error ({type(exc).__name__})", instance=request.url.path)

    app.add_middleware(RefuseNul)


class RefuseNul:
    """422 for a NUL character in the path or the query string, before any route runs (one
    rule for SQLite, which would store it, and PostgreSQL, which cannot)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query:
                response = problem(422, "NUL characters are not allowed", instance=scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
