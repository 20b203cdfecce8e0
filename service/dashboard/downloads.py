"""A job's layers as CSV and JSON, and its preconditioner, behind the dashboard's read gate
(so the links work with the login cookie); the same functions the /v1 routes use."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from service.dashboard import auth
from service.deps import ServicesDep, SessionDep
from service.problems import problem
from service.routers.layers import export_layers_csv
from service.store import queries
from service.store.models import JobRow

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False)


def _when_readable(
    request: Request,
    session: Session,
    job_id: str,
    services: ServicesDep,
    respond: Callable[[], Response],
) -> Response:
    """``respond()`` once the caller may read and the job exists; else a 401 (that names
    nothing) or a 404 problem document."""
    if not auth.may_read(request, services.settings):
        return problem(401, "login required")
    if session.get(JobRow, job_id) is None:
        return problem(404, f"job {job_id} not found", instance=request.url.path)
    return respond()


@router.get("/layers.csv")
def layers_csv(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """The same CSV as ``GET /v1/layers.csv?job_id=…``."""
    filters = queries.LayerFilters(job_id=[job_id])
    csv = partial(export_layers_csv, services, filters, None)
    return _when_readable(request, session, job_id, services, csv)


@router.get("/layers.json")
def layers_json(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """``{"job_id": …, "layers": [every full layer row]}``, streamed page by page."""
    attachment = {"Content-Disposition": f'attachment; filename="{job_id}-layers.json"'}
    body = partial(_layers_json, services, job_id)
    stream = partial(StreamingResponse, media_type="application/json", headers=attachment)
    return _when_readable(request, session, job_id, services, lambda: stream(body()))


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


@router.get("/preconditioner.json")
def preconditioner_json(
    request: Request, job_id: str, services: ServicesDep, session: SessionDep
) -> Response:
    """The same document as ``GET /v1/jobs/{id}/preconditioner``."""

    def document() -> Response:
        body = queries.preconditioner(session, job_id).model_dump_json()
        return Response(body, media_type="application/json")

    return _when_readable(request, session, job_id, services, document)
