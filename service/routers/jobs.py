"""``/v1/jobs``: submit (idempotent), inspect progress, list, cancel, preconditioner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api_schemas import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Job,
    JobFilters,
    JobLogLine,
    JobLogs,
    JobPreconditioner,
    JobSpec,
    JobState,
    Page,
)
from api_schemas.wire import INT64_MAX
from service.deps import (
    JobSubmission,
    ServicesDep,
    SessionDep,
    WriteAuth,
    read_route,
    submission_route,
)
from service.problems import problems
from service.store import job_pages, queries, repo, submit
from service.store import logs as job_logs_store
from service.store.models import JobRow

router = APIRouter(tags=["jobs"], responses=problems(401, 422, 503))


def load_job(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id} not found")
    return row


@router.post("/jobs", **submission_route(Job))
def submit_job(spec: JobSpec, submission: JobSubmission) -> Job:
    """Queue one profiling job; a retried request with the same Idempotency-Key returns the
    same job (200)."""
    session, limits = submission.session, submission.services.settings.intake_limits
    key = submission.idempotency_key
    row, created = submit.submit_job(session, spec, limits=limits, idempotency_key=key)
    submission.answered(created)
    return repo.job_model(session, row)


@router.get("/jobs", **read_route(Page[Job], 400))
def list_jobs(
    session: SessionDep,
    services: ServicesDep,
    filters: Annotated[JobFilters, Query()],
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    body = job_pages.job_page_json(session, filters, services.job_cache, cursor=cursor, limit=limit)
    return Response(body, media_type="application/json")


@router.get("/jobs/{job_id}", **read_route(Job, 404))
def get_job(job_id: str, session: SessionDep) -> Job:
    return repo.job_model(session, load_job(session, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    dependencies=[WriteAuth],
    responses=problems(404, 409),
)
def cancel_job(job_id: str, services: ServicesDep, session: SessionDep) -> Job:
    """Cancel a queued or running job (running Ray tasks are cancelled); 409 if finished."""
    row = load_job(session, job_id)
    state: JobState = row.state  # type: ignore[assignment]
    if state in TERMINAL_STATES and state != "cancelled":  # cancelling twice is no error
        raise HTTPException(409, f"job {job_id} already {state}")
    if services.runner is not None:
        services.runner.cancel(job_id)
    else:
        repo.set_job_state(session, job_id, "cancelled", only_from=ACTIVE_STATES)
    session.expire_all()
    return repo.job_model(session, load_job(session, job_id))


@router.get("/jobs/{job_id}/preconditioner", **read_route(JobPreconditioner, 404))
def job_preconditioner(job_id: str, session: SessionDep) -> JobPreconditioner:
    """The per-layer T(sigma; alpha) parameters of every stored layer of the job."""
    load_job(session, job_id)
    return queries.preconditioner(session, job_id)


@router.get("/jobs/{job_id}/logs", **read_route(JobLogs, 404))
def job_logs(
    job_id: str,
    session: SessionDep,
    after: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="lines after this line id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> JobLogs:
    """The job's log lines (claimed, layers planned, each layer stored or failed, the end)."""
    row = load_job(session, job_id)
    lines = [
        JobLogLine(id=r.id, at=r.at, level=r.level, message=r.message)
        for r in job_logs_store.job_logs(session, job_id, after=after, limit=limit)
    ]
    return JobLogs(job_id=job_id, state=row.state, lines=lines)  # type: ignore[arg-type]
