"""``/v1/batches``: one spec over many checkpoints (one job each), idempotent."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api_schemas import Batch, BatchSpec, JobFilters
from api_schemas.jobs import MAX_BATCH_JOBS
from service.deps import BatchSubmission, SessionDep, read_route, submission_route
from service.problems import problems
from service.store import repo, submit

router = APIRouter(tags=["batches"], responses=problems(401, 422, 503))


@router.post("/batches", **submission_route(Batch))
def submit_batch(spec: BatchSpec, submission: BatchSubmission) -> Batch:
    """Queue a job per checkpoint, all in one transaction or none; the same Idempotency-Key
    returns the same batch (200)."""
    limits = submission.services.settings.intake_limits
    key = submission.idempotency_key
    batch = submit.submit_batch(submission.session, spec, limits=limits, idempotency_key=key)
    submission.answered(batch.created)
    return Batch(id=batch.id, jobs=repo.job_summaries(submission.session, batch.jobs))


@router.get("/batches/{batch_id}", **read_route(Batch, 404))
def get_batch(batch_id: str, session: SessionDep) -> Batch:
    rows, _ = repo.list_jobs(session, JobFilters(batch_id=batch_id), limit=MAX_BATCH_JOBS)
    if not rows:
        raise HTTPException(404, f"batch {batch_id} not found")
    rows.reverse()
    return Batch(id=batch_id, jobs=repo.job_summaries(session, rows))
