"""The stored log lines of jobs (``GET /v1/jobs/{id}/logs``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.models import JobLogRow, utcnow


def add_job_log(session: Session, job_id: str, level: str, message: str) -> None:
    session.add(JobLogRow(job_id=job_id, at=utcnow(), level=level, message=message))
    session.commit()


def job_logs(
    session: Session, job_id: str, *, after: int | None = None, limit: int = 1000
) -> list[JobLogRow]:
    """A job's log lines in the order written, those after line id ``after``."""
    stmt = select(JobLogRow).where(JobLogRow.job_id == job_id)
    if after is not None:
        stmt = stmt.where(JobLogRow.id > after)
    return list(session.scalars(stmt.order_by(JobLogRow.id).limit(limit)))
