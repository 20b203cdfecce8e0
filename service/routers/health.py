"""``/healthz`` (process up) and ``/readyz`` (database and Ray reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.deps import ServicesDep
from service.problems import problems
from service.store import db

router = APIRouter(tags=["health"], responses=problems(422))


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "the database or Ray is not reachable",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    from workers.execution import ray_ready  # imports Ray: on the first probe, not at start-up

    database = await run_in_threadpool(db.ping, services.engine)
    # a follower of `serve --workers N` (service/leader.py) serves the API only: the leader
    # drives Ray, and this process is ready with its database alone
    follower = services.settings.run_jobs and services.runner is None
    ray_ok = True if follower else await run_in_threadpool(ray_ready)
    checks: dict[str, object] = {"database": database, "ray": ray_ok}
    if follower:
        checks["jobs"] = "run by another process of this server"
    if services.runner is not None and services.runner.ray_error:
        checks["ray_error"] = services.runner.ray_error
    ok = database and ray_ok
    body: dict[str, object] = {"status": "ready" if ok else "unavailable", "checks": checks}
    if not ok:
        failing = ", ".join(k for k in ("database", "ray") if not checks[k])
        body["error"] = {"message": f"not ready: {failing}", "status": 503}
    return JSONResponse(body, status_code=200 if ok else 503)
