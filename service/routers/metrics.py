"""``/metrics``: Prometheus text format, computed from the store on each scrape."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api_schemas.jobs import JobState
from service.deps import ServicesDep, SessionDep
from service.problems import problems
from service.store import queries, repo

router = APIRouter(tags=["health"], responses=problems(422, 503))

JOB_STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep, session: SessionDep) -> PlainTextResponse:
    by_state = repo.count_jobs_by_state(session)
    counts, total, n = queries.wall_seconds_histogram(session)
    lines = [
        "# HELP curvprof_jobs Jobs in the store by state.",
        "# TYPE curvprof_jobs gauge",
        *(f'curvprof_jobs{{state="{s}"}} {by_state.get(s, 0)}' for s in JOB_STATES),
        "# HELP curvprof_queue_depth Jobs waiting for a runner.",
        "# TYPE curvprof_queue_depth gauge",
        f"curvprof_queue_depth {by_state.get('queued', 0)}",
        "# HELP curvprof_jobs_active Jobs executing in this server process.",
        "# TYPE curvprof_jobs_active gauge",
        f"curvprof_jobs_active {services.runner.active_jobs if services.runner else 0}",
        "# HELP curvprof_layer_compute_seconds Wall seconds per computed layer.",
        "# TYPE curvprof_layer_compute_seconds histogram",
    ]
    for bound, count in zip(queries.WALL_BUCKETS, counts, strict=True):
        lines.append(f'curvprof_layer_compute_seconds_bucket{{le="{bound}"}} {count}')
    lines += [
        f'curvprof_layer_compute_seconds_bucket{{le="+Inf"}} {n}',
        f"curvprof_layer_compute_seconds_sum {total}",
        f"curvprof_layer_compute_seconds_count {n}",
    ]
    return PlainTextResponse(
        "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
    )
