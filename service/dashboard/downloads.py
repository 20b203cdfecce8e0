"""A job's layers as CSV and JSON, and its preconditioner, behind the dashboard's read gate
(so the links work with the login cookie); the same functions the /v1 routes use."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from service.dashboard.gate import PageRoute, found, require_reader
from service.deps import ServicesDep, SessionDep
from service.routers.layers import export_layers_csv
from service.store import queries
from service.store.models import JobRow

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False, route_class=PageRoute)


def _job_exists(job_id: str, session: SessionDep) -> None:
    found(session.get(JobRow, job_id), f"job {job_id}")


# the reader first: a 401 names nothing, not even whether the job exists
READABLE_JOB = [Depends(require_reader), Depends(_job_exists)]


@router.get("/layers.csv", dependencies=READABLE_JOB)
def layers_csv(job_id: str, services: ServicesDep) -> Response:
    """The same CSV as ``GET /v1/layers.csv?job_id=…``."""
    return export_layers_csv(services, queries.LayerFilters(job_id=[job_id]), None)


@router.get("/layers.json", dependencies=READABLE_JOB)
def layers_json(job_id: str, services: ServicesDep) -> Response:
    """``{"job_id": …, "layers": [every full layer row]}``, streamed page by page."""
    attachment = {"Content-Disposition": f'attachment; filename="{job_id}-layers.json"'}
    return StreamingResponse(
        _layers_json(services, job_id), media_type="application/json", headers=attachment
    )


def _layers_json(services: ServicesDep, job_id: str) -> Iterator[str]:
    filters = queries.LayerFilters(job_id=[job_id])
    yield '{"job_id": ' + json.dumps(job_id) + ', "layers": ['
    cursor: str | None = None
    first = True
    with services.sessions() as session:
        while True:
            rows, cursor = queries.query_layers(session, filters, cursor=cursor, limit=500)
            for row in rows:
                yield ("" if first else ",") + row.model_dump_json()
                first = False
            if cursor is None:
                break
    yield "]}"


@router.get("/preconditioner.json", dependencies=READABLE_JOB)
def preconditioner_json(job_id: str, session: SessionDep) -> Response:
    """The same document as ``GET /v1/jobs/{id}/preconditioner``."""
    body = queries.preconditioner(session, job_id).model_dump_json()
    return Response(body, media_type="application/json")
