"""Repository functions for artifacts, jobs and their progress. Every write commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api_schemas import (
    TERMINAL_STATES,
    Checkpoint,
    Dataset,
    Job,
    JobFilters,
    JobProgress,
    JobSpec,
    JobTimings,
    LayerProfile,
    LayerProgress,
    Page,
    ProfileSettings,
    Provenance,
)
from api_schemas.layer_fields import COLUMN_FIELDS
from service.store import job_summary, paging
from service.store import provenance as stored_provenance
from service.store.codec import pack_profile
from service.store.labels import JobLabelFilters
from service.store.models import (
    CheckpointRow,
    DatasetRow,
    JobLayerRow,
    JobRow,
    JobTagRow,
    LayerProfileRow,
    LayerResultRow,
    layer_column,
    utcnow,
)


class Conflict(Exception):
    """A write that contradicts what is stored (e.g. an Idempotency-Key reused)."""


# ----------------------------------------------------------------------------- artifacts


def checkpoint_model(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        id=row.id,
        sha256=row.sha256,
        format=row.format,  # type: ignore[arg-type]
        architecture=row.arch,
        config=json.loads(row.config_json) if row.config_json else None,
        filename=row.filename,
        size=row.size,
        created_at=row.created_at,
    )


def dataset_model(row: DatasetRow) -> Dataset:
    return Dataset.model_validate(row, from_attributes=True)  # the columns are its fields


ArtifactT = TypeVar("ArtifactT", CheckpointRow, DatasetRow)
WireT = TypeVar("WireT", Checkpoint, Dataset)


def add_or_get(session: Session, row: ArtifactT) -> ArtifactT:
    """Insert an artifact row unless one with that id exists (same bytes -> same id)."""
    model = type(row)
    existing = session.get(model, row.id)
    if existing is not None:
        return existing
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        found = session.get(model, row.id)
        assert found is not None
        return found
    return row


def page_by_created(
    session: Session, model: type[ArtifactT], cursor: str | None, limit: int
) -> tuple[list[ArtifactT], str | None]:
    """Newest first (one of the pager's listings, named after the table)."""
    keyset = paging.newest_first(model.__tablename__, model.created_at, model.id)
    rows, next_cursor = paging.page(session, select(model), keyset, cursor, limit)
    return [row[0] for row in rows], next_cursor


def artifact_page(
    session: Session,
    model: type[ArtifactT],
    to_wire: Callable[[ArtifactT], WireT],
    cursor: str | None,
    limit: int,
) -> Page[WireT]:
    """One page of a listing of artifacts, newest first, as wire models."""
    rows, next_cursor = page_by_created(session, model, cursor, limit)
    return Page[WireT](items=[to_wire(row) for row in rows], next_cursor=next_cursor)


# ---------------------------------------------------------------------------------- jobs


def spec_json(spec: JobSpec) -> str:
    """The JSON of a validated spec (what was asked, however it was spelt)."""
    return spec.model_dump_json()


def add_job(
    session: Session,
    spec: JobSpec,
    *,
    arch: str | None,
    idempotency_key: str | None = None,
    batch_id: str | None = None,
) -> JobRow:
    """Add a queued job and its tags to the session; the caller commits."""
    row = JobRow(
        id=uuid.uuid4().hex,
        state="queued",
        spec_json=spec_json(spec),
        checkpoint_id=spec.checkpoint_id,
        dataset_ref=spec.dataset_id or f"builtin:{spec.dataset}",
        arch=arch,
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        runs=0,
        created_at=utcnow(),
        name=spec.name,
        step=spec.step,
        **job_summary.NEW_JOB_COLUMNS,
    )
    session.add(row)
    session.add_all(JobTagRow(job_id=row.id, tag=tag) for tag in spec.tags)
    return row


def create_job(
    session: Session,
    spec: JobSpec,
    *,
    arch: str | None,
    idempotency_key: str | None = None,
) -> tuple[JobRow, bool]:
    """Queue a job; with an Idempotency-Key already used, return that job (created=False).

    The key is unique in the table, so of concurrent requests with one key exactly one
    insert commits; every other request then reads that job and compares its stored request
    (``same_request``) with its own: equal, it gets the job; different, a :class:`Conflict`
    (409)."""
    if idempotency_key:
        existing = _job_by_key(session, idempotency_key)
        if existing is not None:
            return same_request(existing, spec), False
    row = add_job(session, spec, arch=arch, idempotency_key=idempotency_key)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _job_by_key(session, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return same_request(existing, spec), False
    return row, True


def _job_by_key(session: Session, key: str) -> JobRow | None:
    return session.scalar(select(JobRow).where(JobRow.idempotency_key == key))


def same_request(existing: JobRow, spec: JobSpec) -> JobRow:
    """``existing`` if it was queued by this request, else a Conflict. The stored spec is
    read back before the comparison, so a field added since (with its default) or a change
    in field order does not make a repeated request look different."""
    if job_spec(existing) != spec:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return existing


def job_spec(row: JobRow) -> JobSpec:
    return JobSpec.model_validate_json(row.spec_json)


def job_model(session: Session, row: JobRow) -> Job:
    """One job with its progress, each layer's state included."""
    layers = list(
        session.scalars(
            select(JobLayerRow)
            .where(JobLayerRow.job_id == row.id)
            .order_by(JobLayerRow.position, JobLayerRow.id)
        )
    )
    results = {
        name: (wall, node)
        for name, wall, node in session.execute(
            select(
                layer_column("name"), layer_column("wall_seconds"), layer_column("node_id")
            ).where(LayerResultRow.job_id == row.id)
        )
    }
    progress = JobProgress(
        done=sum(1 for lr in layers if lr.state == "succeeded"),
        total=len(layers),
        failed=sum(1 for lr in layers if lr.state == "failed"),
        layers=[
            LayerProgress(
                name=lr.layer_name,
                state=lr.state,  # type: ignore[arg-type]
                error=lr.error,
                wall_seconds=results.get(lr.layer_name, (None, None))[0],
                node_id=results.get(lr.layer_name, (None, None))[1],
                attempts=lr.attempts,
            )
            for lr in layers
        ],
    )
    compute = sum(w for w, _ in results.values() if w is not None)
    return job_from_row(row, progress, compute)


def job_summaries(session: Session, rows: Sequence[JobRow]) -> list[Job]:
    """The jobs of a listing without their per-layer progress (``job_summary``)."""
    figures = job_summary.summaries(session, rows)
    return [listed_job(row, figures[row.id]) for row in rows]


def listed_job(row: JobRow, summary: job_summary.JobSummary) -> Job:
    """One job of a listing, from its row and its listing figures."""
    progress = JobProgress(done=summary.done, total=summary.total, failed=summary.failed)
    return job_from_row(row, progress, summary.compute_seconds)


def job_from_row(row: JobRow, progress: JobProgress, compute_seconds: float) -> Job:
    """The wire model of one job row, with its progress and compute time."""
    wall = None
    if row.started_at and row.finished_at:
        wall = (row.finished_at - row.started_at).total_seconds()
    return Job(
        id=row.id,
        state=row.state,  # type: ignore[arg-type]
        spec=job_spec(row),
        architecture=row.arch,
        batch_id=row.batch_id,
        progress=progress,
        timings=JobTimings(
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            wall_seconds=wall,
            compute_seconds=compute_seconds,
        ),
        error=row.error,
    )


JOBS_ORDER = paging.newest_first("jobs", JobRow.created_at, JobRow.id)


def list_jobs(
    session: Session,
    filters: JobFilters | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[JobRow], str | None]:
    """A page of the jobs ``filters`` select, newest first, and the next page's cursor."""
    rows, next_cursor = _page_of_jobs(session, select(JobRow), filters, cursor, limit)
    return [row[0] for row in rows], next_cursor


def list_job_records(
    session: Session,
    filters: JobFilters | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Row[Any]], str | None]:
    """:func:`list_jobs`' page as plain rows whose first values are the job table's
    columns, in its order: no ORM object is built (``GET /v1/jobs``, ``job_pages``)."""
    return _page_of_jobs(session, select(*JobRow.__table__.columns), filters, cursor, limit)


def _page_of_jobs(
    session: Session,
    what: Select[Any],
    filters: JobFilters | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Row[Any]], str | None]:
    filters = filters or JobFilters()
    labels = JobLabelFilters(
        name=filters.name,
        tags=filters.tags(),
        step=filters.step,
        step_min=filters.step_min,
        step_max=filters.step_max,
    )
    stmt = what.where(*labels.job_clauses())
    if filters.id_prefix:
        stmt = stmt.where(JobRow.id.startswith(filters.id_prefix, autoescape=True))
    if filters.states():
        stmt = stmt.where(JobRow.state.in_(filters.states()))
    if filters.checkpoint_id:
        stmt = stmt.where(JobRow.checkpoint_id == filters.checkpoint_id)
    if filters.batch_id:
        stmt = stmt.where(JobRow.batch_id == filters.batch_id)
    return paging.page(session, stmt, JOBS_ORDER, cursor, limit)


def jobs_in_states(
    session: Session, states: Sequence[str], *, ids: Sequence[str] | None = None
) -> list[JobRow]:
    """The jobs in ``states`` (of ``ids`` only, when given), oldest first."""
    stmt = select(JobRow).where(JobRow.state.in_(states))
    if ids is not None:
        stmt = stmt.where(JobRow.id.in_(ids))
    return list(session.scalars(stmt.order_by(JobRow.created_at, JobRow.id)))


def set_job_state(
    session: Session,
    job_id: str,
    state: str,
    *,
    error: str | None = None,
    only_from: Sequence[str] | None = None,
    **values: Any,
) -> bool:
    """Move a job to ``state`` (optionally only from some states); True when a row changed."""
    now = utcnow()
    changes: dict[str, Any] = {"state": state, **values}
    if error is not None:
        changes["error"] = error
    if state in TERMINAL_STATES:
        changes["finished_at"] = now
    stmt = update(JobRow).where(JobRow.id == job_id)
    if only_from is not None:
        stmt = stmt.where(JobRow.state.in_(only_from))
    result = session.execute(stmt.values(**changes))
    changed = bool(getattr(result, "rowcount", 0))
    if changed and state in TERMINAL_STATES:
        job_summary.fix(session, job_id)
    elif changed:
        session.execute(job_summary.clear(job_id))
    session.commit()
    return changed


def ensure_job_layers(session: Session, job_id: str, names: Iterable[str]) -> None:
    """Create a progress row for each layer (existing rows keep their state)."""
    have = set(session.scalars(select(JobLayerRow.layer_name).where(JobLayerRow.job_id == job_id)))
    for position, name in enumerate(names):
        if name not in have:
            session.add(
                JobLayerRow(job_id=job_id, position=position, layer_name=name, state="pending")
            )
    session.execute(job_summary.clear(job_id))
    session.commit()


def set_layers_state(
    session: Session,
    job_id: str,
    names: Sequence[str],
    state: str,
    *,
    error: str | None = None,
    bump_attempts: bool = False,
) -> None:
    values: dict[str, Any] = {"state": state, "error": error}
    if bump_attempts:
        values["attempts"] = JobLayerRow.attempts + 1
    session.execute(
        update(JobLayerRow)
        .where(JobLayerRow.job_id == job_id, JobLayerRow.layer_name.in_(list(names)))
        .values(**values)
    )
    session.execute(job_summary.clear(job_id))
    session.commit()


def stored_layer_names(session: Session, job_id: str) -> set[str]:
    return set(session.scalars(select(layer_column("name")).where(LayerResultRow.job_id == job_id)))


def _profile_columns(profile: LayerProfile) -> dict[str, Any]:
    """The registry's profile columns of a layer (``api_schemas.layer_fields``)."""
    out: dict[str, Any] = {}
    for f in COLUMN_FIELDS:
        if f.source == "profile":
            value = getattr(profile, f.name)
            out[f.column_name] = json.dumps(sorted(value)) if f.type == "flags" else value
    return out


def record_layer_result(
    session: Session,
    job: JobRow,
    profile: LayerProfile,
    provenance: Provenance,
    settings: ProfileSettings,
) -> bool:
    """Store one layer with the Provenance of its numbers and the settings they depend on, and
    mark it done, in one transaction. False if it was already stored."""
    row = LayerResultRow(
        job_id=job.id,
        checkpoint_id=job.checkpoint_id,
        arch=job.arch,
        step=job.step,
        **_profile_columns(profile),
        **stored_provenance.to_columns(provenance),
        dtype=settings.dtype,
        top_k=settings.top_k,
        created_at=utcnow(),
        stored_profile=LayerProfileRow(blob=pack_profile(profile)),
    )
    session.add(row)
    mark = (
        update(JobLayerRow)
        .where(JobLayerRow.job_id == job.id, JobLayerRow.layer_name == profile.name)
        .values(state="succeeded", error=None)
    )
    try:
        session.flush()
        session.execute(mark)
        session.execute(job_summary.clear(job.id))
        session.commit()
        return True
    except IntegrityError:
        session.rollback()
        session.execute(mark)
        session.execute(job_summary.clear(job.id))
        session.commit()
        return False


def set_job_provenance(session: Session, job_id: str, provenance: Provenance) -> None:
    """Keep the job's Provenance (what its layers share: checkpoint, batch, versions)."""
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(provenance_json=provenance.model_dump_json())
    )
    session.commit()


def job_provenance(row: JobRow) -> Provenance | None:
    """The Provenance the runner kept for the job, None before it was prepared."""
    if row.provenance_json is None:
        return None
    return Provenance.model_validate_json(row.provenance_json)


def count_jobs_by_state(session: Session) -> dict[str, int]:
    return {
        state: int(n)
        for state, n in session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
    }
