"""``GET /v1/jobs`` pages as JSON, each job's bytes encoded once per process while it stays
the same (``json_cache.RowJsonCache``).

A job's JSON is a function of its row and its listing figures (``job_summary``) alone, so
the key is every column of the row and those figures: a job that changes in any way (its
state, its times, its error, a layer done) has a new key, and its old bytes age out. Building
the ``Job`` model validates the stored spec; a page of 50 ended jobs was more than half of
the listing's cost (docs/reliability.md, "The load benchmark").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from api_schemas import JobFilters
from service.store import job_summary, repo
from service.store.json_cache import RowJsonCache, page_json
from service.store.models import JobRow

JobKey = tuple[Any, ...]
"""Every column value of a job row, then its ``job_summary.JobSummary``."""

_COLUMNS = tuple(column.key for column in JobRow.__table__.columns)


def job_key(row: Row[Any], summary: job_summary.JobSummary) -> JobKey:
    """The key of a row of ``repo.list_job_records``: its job columns, then ``summary``."""
    return (*tuple(row)[: len(_COLUMNS)], summary)


def _key_bytes(key: JobKey) -> int:
    return sum(len(value) for value in key if isinstance(value, str))


def job_page_json(
    session: Session,
    filters: JobFilters,
    cache: RowJsonCache[JobKey],
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> bytes:
    """The JSON of ``Page[Job]`` for ``repo.list_jobs(session, filters, ...)``, each job as
    ``repo.job_summaries`` gives it, byte for byte; from ``cache`` for the jobs seen
    unchanged before. The jobs are read as plain rows, and an ORM ``JobRow`` is built only
    for a job whose bytes are not cached."""
    rows, next_cursor = repo.list_job_records(session, filters, cursor=cursor, limit=limit)
    figures = job_summary.summaries(session, rows)
    keys = [job_key(row, figures[row.id]) for row in rows]
    fragments = cache.get_many(keys)
    for key in keys:
        if key in fragments:
            continue
        *columns, summary = key
        job = JobRow(**dict(zip(_COLUMNS, columns, strict=True)))
        fragments[key] = repo.listed_job(job, summary).model_dump_json().encode()
        cache.put(key, fragments[key], _key_bytes(key))
    return page_json((fragments[key] for key in keys), next_cursor)
