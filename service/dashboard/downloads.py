"""A job's layers as CSV and JSON, and its preconditioner, behind the dashboard's read gate
(so the links work with the login cookie); the same functions the /v1 routes use."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from service.dashboard import auth
from service.deps import ServicesDep, SessionDep
from service.problems import problem
from service.routers.layers import export_layers_csv
from service.store import queries
from service.store.models import JobRow

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False)


def _denied(
    request: Request, services: ServicesDep, session: SessionDep, job_id: str
) -> Response | None:
    if not auth.may_read(request, services.settings):
        return problem(401, "login required")
    if session.get(JobRow, job_id) is None:
        return problem(404, f"job {job_id} not found", instance=request.url.path)
    return None


@router.get("/layers.csv")
def layers_csv(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """The same CSV as ``GET /v1/layers.csv?job_id=…``."""
    denied = _denied(request, services, session, job_id)
    if denied is not None:
        return denied
    return export_layers_csv(services, queries.LayerFilters(job_id=[job_id]), None)


@router.get("/layers.json")
def layers_json(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """``{"job_id": …, "layers": [every full layer row]}``, streamed page by page."""
    denied = _denied(request, services, session, job_id)
    if denied is not None:
        return denied
    filters = queries.LayerFilters(job_id=[job_id])

    def generate() -> Iterator[str]:
        yield '{"job_id": ' + json.dumps(job_id) + ', "layers": ['
        cursor: str | None = None
        first = True
        with services.sessions() as inner:
            while True:
                rows, cursor = queries.query_layers(inner, filters, cursor=cursor, limit=500)
                for row in rows:
                    yield ("" if first else ",") + row.model_dump_json()
                    first = False
                if cursor is None:
                    break
        yield "]}"

    return StreamingResponse(
        generate(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-layers.json"'},
    )


@router.get("/preconditioner.json")
def preconditioner_json(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """The same document as ``GET /v1/jobs/{id}/preconditioner``."""
    denied = _denied(request, services, session, job_id)
    if denied is not None:
        return denied
    body = queries.preconditioner(session, job_id).model_dump_json()
    return Response(body, media_type="application/json")
