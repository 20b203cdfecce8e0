"""``create_app(settings)``: the FastAPI application (OpenAPI under /v1, problem+json errors)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from service import __version__, offline_docs
from service.admission import AdmissionGate
from service.artifacts import ArtifactRejected, ArtifactStore
from service.deps import Services
from service.jobs_runner import JobRunner
from service.leader import Leadership
from service.problems import install_problem_handlers, move_problem_schemas, problem
from service.settings import Settings
from service.store import db
from service.store.json_cache import RowJsonCache
from service.store.paging import CursorError
from service.store.repo import Conflict
from service.store.statistics import StatisticsRefresher
from service.store.submit import MissingReference
from service.upload import UploadError

log = logging.getLogger("curvprof.app")
POOL_OVERFLOW = 8
UPLOAD_PATHS = frozenset({"/v1/checkpoints", "/v1/datasets"})  # their own admission lane


def install_error_handlers(app: FastAPI) -> None:
    """Problem documents for every error (service.problems), the domain errors included."""

    def with_status(status: int) -> Any:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            code = getattr(exc, "status", status)
            detail = getattr(exc, "message", None) or str(exc)
            return problem(code, detail, instance=request.url.path)

        return handle

    install_problem_handlers(
        app,
        {
            UploadError: with_status(400),
            ArtifactRejected: with_status(422),
            CursorError: with_status(400),
            Conflict: with_status(409),
            MissingReference: with_status(422),
        },
    )


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with error bodies filed as problem+json (generated once)."""
    if app.openapi_schema is None:
        app.openapi_schema = move_problem_schemas(
            get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
        )
    return app.openapi_schema


@contextmanager
def start_up_objects_frozen() -> Iterator[None]:
    """Put every object alive once the app has started (the modules of torch, pydantic,
    SQLAlchemy and the app: about 290,000) out of the garbage collector's reach while the
    app serves, and give them back when it stops. Otherwise each full collection scans
    them all, stalling every request of the process for about 0.2 s, once or twice in each
    load benchmark repeat (docs/reliability.md, "Round 9"). Freezing moves the collector's
    lists, and costs nothing measurable; the few cycles of garbage alive at that moment
    wait for the unfreeze."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db.upgrade(settings.database_url)
        # requests inside the app <= api_threads + upload_slots (the AdmissionGate's two
        # lanes), each on one worker thread with at most one connection; the few routes
        # that open a second session (CSV export, downloads) take the overflow. A checkout
        # that still waits db_pool_timeout seconds is answered 503 (docs/reliability.md)
        inside = settings.api_threads + settings.upload_slots
        anyio.to_thread.current_default_thread_limiter().total_tokens = inside
        pool = db.PoolSize(inside, POOL_OVERFLOW, settings.db_pool_timeout)
        engine = db.make_engine(settings.database_url, pool)
        sessions = db.make_session_factory(engine)
        # the job runner has its own pool, so a saturated API never starves it
        runner_engine = db.make_engine(
            settings.database_url, db.PoolSize(2 * settings.max_concurrent_jobs + 2, 2, 60.0)
        )
        artifacts = ArtifactStore(settings.artifacts_dir)
        stale = artifacts.remove_stale_uploads()
        if stale:
            log.info("removed %d partial uploads left by a previous server", stale)
        services = app.state.services = Services(
            settings=settings,
            engine=engine,
            sessions=sessions,
            read_sessions=db.make_read_session_factory(engine),
            artifacts=artifacts,
            runner=None,
            layer_cache=RowJsonCache(settings.layer_cache_bytes),
            job_cache=RowJsonCache(settings.job_cache_bytes),
        )

        statistics = StatisticsRefresher(engine)

        def lead() -> None:
            """The leader's duties (service/leader.py): statistics, then the job runner."""
            statistics.refresh()
            statistics.start()
            if settings.run_jobs:
                runner = JobRunner(settings, db.make_session_factory(runner_engine))
                runner.on_layer_stored = app.state.metrics.observe_layer
                runner.start()
                services.runner = runner

        leadership = Leadership(settings.data_dir, lead)
        leadership.start()
        try:
            with start_up_objects_frozen():
                yield
        finally:
            leadership.stop()
            statistics.stop()
            if services.runner is not None:
                services.runner.stop()
            leadership.release()  # only now may a follower take over the jobs
            engine.dispose()
            runner_engine.dispose()

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
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
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
    # outermost of the app's own middleware: the metrics time a request once it is admitted
    app.add_middleware(
        AdmissionGate,
        slots=settings.api_threads,
        queue_timeout=settings.queue_timeout_s,
        upload_slots=settings.upload_slots,
        upload_paths=UPLOAD_PATHS,
    )
    offline_docs.install_offline_docs(app, "/v1/docs")
    from service import dashboard

    app.include_router(dashboard.router)  # the web dashboard under /ui (and / redirects there)
    return app
