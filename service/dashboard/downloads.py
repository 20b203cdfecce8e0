"""A job's layers as CSV and JSON, and its preconditioner, behind the dashboard's read gate
(so the links work with the login cookie); the same functions the /v1 routes use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from service.dashboard import auth
from service.deps import ServicesDep, SessionDep
from service.routers.layers import export_layers_csv
from service.store import queries
from service.store.models import JobRow

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False)


def readable_job(request: Request, job_id: str, services: ServicesDep, session: SessionDep) -> str:
    """The path's job id, once the caller may read and the job exists (401, 404 otherwise)."""
    if not auth.may_read(request, services.settings):
        raise HTTPException(401, "login required")
    if session.get(JobRow, job_id) is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job_id


ReadableJob = Annotated[str, Depends(readable_job)]


@router.get("/layers.csv")
def layers_csv(job_id: ReadableJob, services: ServicesDep) -> Response:
    """The same CSV as ``GET /v1/layers.csv?job_id=…``."""
    return export_layers_csv(services, queries.LayerFilters(job_id=[job_id]), None)


@router.get("/layers.json")
def layers_json(job_id: ReadableJob, services: ServicesDep) -> Response:
    """``{"job_id": …, "layers": [every full layer row]}``, streamed page by page."""
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
def preconditioner_json(job_id: ReadableJob, session: SessionDep) -> Response:
    """The same document as ``GET /v1/jobs/{id}/preconditioner``."""
    body = queries.preconditioner(session, job_id).model_dump_json()
    return Response(body, media_type="application/json")
