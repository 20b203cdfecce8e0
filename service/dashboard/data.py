"""What the dashboard pages read from the store: typed rows, a handful of indexed queries.

Each page costs a fixed number of queries whatever the store holds: job pages read their
layer table one keyset page at a time (``service.store.queries``), charts read the brief
scalar columns of one job (or of the compared jobs), never the stored profiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from api_schemas import TERMINAL_STATES, Provenance
from service.store import repo
from service.store.models import JobLayerRow, JobRow, LayerResultRow, layer_column


@dataclass
class JobSummary:
    """One job as the dashboard lists it (labels read from the submitted spec when present)."""

    id: str
    state: str
    arch: str | None
    checkpoint_id: str
    dataset: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    batch_id: str | None
    error: str | None
    spec: dict[str, Any]
    provenance: Provenance | None = None  # what its layers share, once it was prepared
    done: int = 0
    total: int = 0
    failed: int = 0

    @property
    def name(self) -> str | None:
        value = self.spec.get("name")
        return str(value) if value else None

    @property
    def tags(self) -> list[str]:
        value = self.spec.get("tags") or []
        return [str(t) for t in value] if isinstance(value, list) else []

    @property
    def step(self) -> int | None:
        value = self.spec.get("step")
        return value if isinstance(value, int) else None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def percent(self) -> float:
        if self.total:
            return 100.0 * self.done / self.total
        return 100.0 if self.state == "succeeded" else 0.0

    @property
    def label(self) -> str:
        """Short label for chart axes: the job's name (and step), else arch and id prefix."""
        base = self.name or f"{self.arch or 'job'} {self.id[:8]}"
        return f"{base} @{self.step}" if self.step is not None else base


def _dataset(row: JobRow) -> str:
    return row.dataset_ref.removeprefix("builtin:")


def _spec(row: JobRow) -> dict[str, Any]:
    try:
        value = json.loads(row.spec_json)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def layer_counts(session: Session, job_ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """(done, total, failed) layer counts of each job, one grouped query."""
    if not job_ids:
        return {}
    out: dict[str, list[int]] = {j: [0, 0, 0] for j in job_ids}
    stmt = (
        select(JobLayerRow.job_id, JobLayerRow.state, func.count())
        .where(JobLayerRow.job_id.in_(job_ids))
        .group_by(JobLayerRow.job_id, JobLayerRow.state)
    )
    for job_id, state, n in session.execute(stmt):
        counts = out[job_id]
        counts[1] += int(n)
        if state == "succeeded":
            counts[0] += int(n)
        elif state == "failed":
            counts[2] += int(n)
    return {j: (c[0], c[1], c[2]) for j, c in out.items()}


# the JobSummary fields that are JobRow columns of the same name
_JOB_COLUMNS = tuple(f.name for f in fields(JobSummary) if f.name in JobRow.__table__.columns)


def summaries(session: Session, rows: list[JobRow]) -> list[JobSummary]:
    counts = layer_counts(session, [r.id for r in rows])
    out = []
    for row in rows:
        done, total, failed = counts.get(row.id, (0, 0, 0))
        out.append(
            JobSummary(
                **{name: getattr(row, name) for name in _JOB_COLUMNS},
                dataset=_dataset(row),
                spec=_spec(row),
                provenance=repo.job_provenance(row),
                done=done,
                total=total,
                failed=failed,
            )
        )
    return out


def job_summary(session: Session, job_id: str) -> JobSummary | None:
    row = session.get(JobRow, job_id)
    return summaries(session, [row])[0] if row is not None else None


@dataclass
class FailedLayer:
    name: str
    error: str | None
    attempts: int


def failed_layers(session: Session, job_id: str) -> list[FailedLayer]:
    stmt = (
        select(JobLayerRow.layer_name, JobLayerRow.error, JobLayerRow.attempts)
        .where(JobLayerRow.job_id == job_id, JobLayerRow.state == "failed")
        .order_by(JobLayerRow.position, JobLayerRow.id)
    )
    return [FailedLayer(name, error, attempts) for name, error, attempts in session.execute(stmt)]


def stored_count(session: Session, job_id: str) -> int:
    stmt = select(func.count()).select_from(LayerResultRow).where(LayerResultRow.job_id == job_id)
    return int(session.scalar(stmt) or 0)


@dataclass
class LayerPoint:
    """The scalars of one stored layer that the charts draw, in depth order."""

    id: int
    job_id: str
    name: str
    kind: str
    depth: int
    alpha: float | None
    gamma: float | None
    s: float | None
    predicted_s: float | None
    identity_error: float | None


# the registry's fields each point carries (the identity error is triangle_relative_error)
_POINT_FIELDS = ("id", "job_id", "name", "kind", "alpha", "gamma", "s", "predicted_s")


def layer_points(session: Session, job_ids: list[str]) -> dict[str, list[LayerPoint]]:
    """Every stored layer of the given jobs in depth order (the job's layer position; layers
    without a progress row go last, in id order). Indexed columns only."""
    jl = JobLayerRow
    job_id, name = layer_column("job_id"), layer_column("name")
    position = func.coalesce(jl.position, 1 << 30)
    stmt = (
        select(
            *(layer_column(field).label(field) for field in _POINT_FIELDS),
            layer_column("triangle_relative_error").label("identity_error"),
        )
        .outerjoin(jl, and_(jl.job_id == job_id, jl.layer_name == name))
        .where(job_id.in_(job_ids))
        .order_by(job_id, position, layer_column("id"))
    )
    out: dict[str, list[LayerPoint]] = {j: [] for j in job_ids}
    for row in session.execute(stmt):
        points = out[row.job_id]
        points.append(LayerPoint(depth=len(points), **row._mapping))
    return out
