"""A job's progress counts and compute time for listings, fixed on the job row when it ends.

A listing shows, per job, how many of its layers are done, failed and planned, and the sum of
its stored layers' wall seconds. Counted live, that reads every layer row of every job on the
page (10⁵ rows for 50 jobs of 2,000 layers). A job that has ended no longer changes, so
``set_job_state`` fixes its figures on the job row (``jobs.summary_*``) in the transaction
that ends it; any later write to its layers (a result that arrives after a cancel) clears
them, and such a job is counted live again. A new job is written with the figures of no
layers, which planning its layers (or starting it) clears. Fixed or live, the figures are
the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import Row, Update, func, select, update
from sqlalchemy.orm import Session

from service.store.models import JobLayerRow, JobRow, LayerResultRow, layer_column


@dataclass(frozen=True)
class JobSummary:
    """What a listing shows of a job's layers."""

    done: int = 0
    total: int = 0
    failed: int = 0
    compute_seconds: float = 0.0


def counted(session: Session, ids: Sequence[str]) -> dict[str, JobSummary]:
    """The figures of ``ids`` counted from their layer rows: two grouped queries for all."""
    counts: dict[str, dict[str, int]] = {job_id: {} for job_id in ids}
    for job_id, state, n in session.execute(
        select(JobLayerRow.job_id, JobLayerRow.state, func.count())
        .where(JobLayerRow.job_id.in_(ids))
        .group_by(JobLayerRow.job_id, JobLayerRow.state)
    ):
        counts[job_id][state] = int(n)
    compute: dict[str, float] = {
        job_id: float(total or 0.0)
        for job_id, total in session.execute(
            select(LayerResultRow.job_id, func.sum(layer_column("wall_seconds")))
            .where(LayerResultRow.job_id.in_(ids))
            .group_by(LayerResultRow.job_id)
        )
    }
    return {
        job_id: JobSummary(
            done=by_state.get("succeeded", 0),
            total=sum(by_state.values()),
            failed=by_state.get("failed", 0),
            compute_seconds=compute.get(job_id, 0.0),
        )
        for job_id, by_state in counts.items()
    }


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """``JobSummary`` field -> value, as ``jobs.summary_<field>`` column -> value."""
    return {f"summary_{name}": value for name, value in values.items()}


NAMES = [f.name for f in fields(JobSummary)]
NEW_JOB_COLUMNS = _columns(asdict(JobSummary()))
"""A new job's figures: it has no layers yet, until the runner plans them (which clears)."""


def summaries(session: Session, rows: Sequence[JobRow | Row[Any]]) -> dict[str, JobSummary]:
    """Each job's figures: fixed on its row where it has ended, else counted. ``rows`` are
    ORM rows or plain rows of the job table's columns."""
    out = {
        row.id: JobSummary(**{name: getattr(row, f"summary_{name}") for name in NAMES})
        for row in rows
        if row.summary_total is not None
    }
    live = [row.id for row in rows if row.summary_total is None]
    return out | (counted(session, live) if live else {})


def fix(session: Session, job_id: str) -> None:
    """Write the job's counted figures on its row (in the caller's transaction)."""
    summary = counted(session, [job_id])[job_id]
    session.execute(update(JobRow).where(JobRow.id == job_id).values(_columns(asdict(summary))))


def clear(job_id: str) -> Update:
    """The statement that drops a job's fixed figures (its layers are changing)."""
    return (
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.summary_total.is_not(None))
        .values(_columns(dict.fromkeys(NAMES)))
    )
