"""``/v1/batches``: one spec over many checkpoints (one job each), idempotent."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response

from api_schemas import Batch, BatchSpec
from service.deps import ReadAuth, ServicesDep, SessionDep, WriteAuth
from service.problems import problems
from service.routers.jobs import check_references
from service.store import repo

router = APIRouter(tags=["batches"], responses=problems(401, 422, 503))


@router.post(
    "/batches",
    response_model=Batch,
    status_code=201,
    dependencies=[WriteAuth],
    responses={
        200: {
            "model": Batch,
            "description": "the batch of an earlier request with "
            "this Idempotency-Key and the same body",
        },
        **problems(400, 409),
    },
)
def submit_batch(
    spec: BatchSpec,
    response: Response,
    services: ServicesDep,
    session: SessionDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Batch:
    """Queue a job per checkpoint; the same Idempotency-Key returns the same batch (200)."""
    specs = spec.job_specs()
    archs = [check_references(session, s, services.settings.intake_limits) for s in specs]
    batch_id = uuid.uuid4().hex
    rows = []
    created_any = False
    for index, (job_spec, arch) in enumerate(zip(specs, archs, strict=True)):
        key = f"batch:{idempotency_key}:{index}" if idempotency_key else None
        row, created = repo.create_job(
            session, job_spec, arch=arch, idempotency_key=key, batch_id=batch_id
        )
        if index == 0 and not created and row.batch_id:
            batch_id = row.batch_id
        created_any = created_any or created
        rows.append(row)
    if not created_any:
        response.status_code = 200
    elif services.runner is not None:
        services.runner.notify()
    return Batch(id=batch_id, jobs=repo.job_summaries(session, rows))


@router.get(
    "/batches/{batch_id}", response_model=Batch, dependencies=[ReadAuth], responses=problems(404)
)
def get_batch(batch_id: str, session: SessionDep) -> Batch:
    rows, _ = repo.list_jobs(session, batch_id=batch_id, limit=1000)
    if not rows:
        raise HTTPException(404, f"batch {batch_id} not found")
    rows.reverse()
    return Batch(id=batch_id, jobs=repo.job_summaries(session, rows))
