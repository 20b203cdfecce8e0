"""``create_app(settings)``: the FastAPI application (OpenAPI under /v1, JSON errors only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__, offline_docs
from service.artifacts import ArtifactRejected, ArtifactStore
from service.deps import Services
from service.jobs_runner import JobRunner
from service.settings import Settings
from service.store import db
from service.store.codec import CursorError
from service.store.repo import Conflict
from service.upload import UploadError

log = logging.getLogger("curvprof.app")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "status": status}}


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_error(422, _validation_message(exc))

    @app.exception_handler(UploadError)
    async def _upload(_: Request, exc: UploadError) -> JSONResponse:
        return _json_error(exc.status, exc.message)

    @app.exception_handler(ArtifactRejected)
    async def _rejected(_: Request, exc: ArtifactRejected) -> JSONResponse:
        return _json_error(exc.status, exc.message)

    @app.exception_handler(CursorError)
    async def _cursor(_: Request, exc: CursorError) -> JSONResponse:
        return _json_error(400, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _json_error(409, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_error(500, f"internal error ({type(exc).__name__})")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db.upgrade(settings.database_url)
        engine = db.make_engine(settings.database_url)
        sessions = db.make_session_factory(engine)
        runner = JobRunner(settings, sessions) if settings.run_jobs else None
        if runner is not None:
            runner.on_layer_stored = app.state.metrics.observe_layer
        app.state.services = Services(
            settings=settings,
            engine=engine,
            sessions=sessions,
            artifacts=ArtifactStore(settings.artifacts_dir),
            runner=runner,
        )
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            engine.dispose()

    app = FastAPI(
        title="curvprof",
        version=__version__,
        description="Distributed curvature profiling of neural networks.",
        openapi_url="/v1/openapi.json",
        docs_url=None,  # served from the installed Swagger UI assets (offline_docs)
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    from service.routers import (
        batches,
        checkpoints,
        datasets,
        health,
        jobs,
        layers,
        metrics,
        plots,
        summary,
    )

    for module in (checkpoints, datasets, jobs, batches, layers, plots, summary):
        app.include_router(module.router, prefix="/v1")
    app.include_router(health.router)
    metrics.install_metrics(app)
    offline_docs.install_offline_docs(app, "/v1/docs")
    return app
