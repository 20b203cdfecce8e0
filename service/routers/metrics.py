"""``/metrics``: Prometheus exposition through ``prometheus_client``.

Per application (so two apps in one process never share counters):

- ``curvprof_http_requests_total{method,route,status}`` and
  ``curvprof_http_request_duration_seconds{method,route}``, by route template (a path no
  route matches counts as ``unmatched``, so scanners cannot grow the label set);
- ``curvprof_layer_compute_seconds``: a histogram of layer wall times, observed as the job
  runner stores each layer (the scrape reads no layer table);
- ``curvprof_jobs{state}``, ``curvprof_queue_depth`` and ``curvprof_jobs_active``, read at
  scrape time from one ``GROUP BY state`` over the (indexed) jobs table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_schemas.enums import JOB_STATES
from service.problems import problems
from service.store import repo

router = APIRouter(tags=["health"], responses=problems(422, 503))

WALL_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class StoreCollector(Collector):
    """Job counts by state, read from the store at each scrape (one small GROUP BY)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        services = getattr(self.app.state, "services", None)
        if services is None:  # before start-up: nothing to report yet
            return
        with services.sessions() as session:
            by_state = repo.count_jobs_by_state(session)
        jobs = GaugeMetricFamily("curvprof_jobs", "Jobs in the store by state.", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], by_state.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "curvprof_queue_depth", "Jobs waiting for a runner.", value=by_state.get("queued", 0)
        )
        active = services.runner.active_jobs if services.runner is not None else 0
        yield GaugeMetricFamily(
            "curvprof_jobs_active", "Jobs executing in this server process.", value=active
        )


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    layer_seconds: Histogram

    def observe_layer(self, wall_seconds: float | None) -> None:
        if wall_seconds is not None:
            self.layer_seconds.observe(wall_seconds)


def route_template(request: Request) -> str:
    """The matched route's template with its router prefix (``/v1/jobs/{job_id}``), or
    ``unmatched``. The route knows its path below the prefix; the prefix is what precedes
    that path, rendered with this request's parameters, in the request's path."""
    route = request.scope.get("route")
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return "unmatched"
    path = str(request.scope.get("path", ""))
    try:
        rendered = template.format(**request.path_params)
    except (KeyError, IndexError, ValueError):
        return template
    return path[: len(path) - len(rendered)] + template if path.endswith(rendered) else template


class RequestMetrics:
    """Pure ASGI middleware counting and timing every request by route template (until its
    last byte is sent). Not ``@app.middleware("http")``: that runs each request in a task
    group of its own with a memory stream for its body, a cost on every request."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            request = Request(scope)
            route = route_template(request)
            self.metrics.requests.labels(request.method, route, str(status)).inc()
            self.metrics.latency.labels(request.method, route).observe(
                time.perf_counter() - started
            )


def install_metrics(app: FastAPI) -> ServiceMetrics:
    """The app's registry, its HTTP middleware and ``GET /metrics``."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(
        registry=registry,
        requests=Counter(
            "curvprof_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "curvprof_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=registry,
        ),
        layer_seconds=Histogram(
            "curvprof_layer_compute_seconds",
            "Wall seconds per computed layer.",
            buckets=WALL_BUCKETS,
            registry=registry,
        ),
    )
    registry.register(StoreCollector(app))
    app.state.metrics = metrics

    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(router)
    return metrics


@router.get("/metrics", response_class=Response)
def metrics_endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(render_metrics(registry), media_type=CONTENT_TYPE_LATEST)
