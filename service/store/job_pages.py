"""``GET /v1/jobs`` pages as JSON, each job's bytes encoded once per process while it stays
the same (``json_cache.RowJsonCache``).

A job's JSON is a function of its row and its listing figures (``job_summary``) alone, so
the key is every column of the row and those figures: a job that changes in any way (its
state, its times, its error, a layer done) has a new key, and its old bytes age out. Building
the ``Job`` model validates the stored spec; a page of 50 ended jobs was more than half of
the listing's cost (docs/reliability.md, "The load benchmark").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from service.store import job_summary, repo
from service.store.json_cache import RowJsonCache, page_json
from service.store.models import JobRow

JobKey = tuple[Any, ...]
"""Every column value of a job row, then its ``job_summary.JobSummary``."""

_COLUMNS = tuple(column.key for column in JobRow.__table__.columns)


def job_key(row: JobRow, summary: job_summary.JobSummary) -> JobKey:
    return (*(getattr(row, name) for name in _COLUMNS), summary)


def _key_bytes(key: JobKey) -> int:
    return sum(len(value) for value in key if isinstance(value, str))


def job_page_json(
    session: Session,
    rows: Sequence[JobRow],
    next_cursor: str | None,
    cache: RowJsonCache[JobKey],
) -> bytes:
    """``Page[Job](items=repo.job_summaries(session, rows), next_cursor=...)``'s JSON, byte
    for byte, from ``cache`` for the jobs seen unchanged before."""
    figures = job_summary.summaries(session, rows)
    keys = [job_key(row, figures[row.id]) for row in rows]
    fragments = cache.get_many(keys)
    for row, key in zip(rows, keys, strict=True):
        if key in fragments:
            continue
        fragments[key] = repo.listed_job(row, figures[row.id]).model_dump_json().encode()
        cache.put(key, fragments[key], _key_bytes(key))
    return page_json((fragments[key] for key in keys), next_cursor)
