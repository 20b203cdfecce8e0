"""Submitting jobs: check what a spec refers to, then queue one job or a whole batch.

A batch is atomic: its jobs are inserted in one transaction, all of them or none. Retried
with the same Idempotency-Key and body, a submission returns what the first one queued
(``created`` False); with another body, a :class:`repo.Conflict` (409).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api_schemas import BatchSpec, JobSpec
from api_schemas.jobs import MAX_BATCH_JOBS
from service.artifacts import check_zoo_config, zoo_reference
from service.store import repo
from service.store.models import IDEMPOTENCY_KEY_LENGTH, CheckpointRow, DatasetRow, JobRow
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits


def batch_job_key(key: str, index: int) -> str:
    """The stored Idempotency-Key of job ``index`` of the batch submitted with ``key``."""
    return f"batch:{key}:{index}"


BATCH_KEY_LENGTH = IDEMPOTENCY_KEY_LENGTH - len(batch_job_key("", MAX_BATCH_JOBS - 1))
"""The longest Idempotency-Key of a batch: each of its jobs' keys still fits the column."""


class MissingReference(Exception):
    """A spec names a checkpoint or dataset that is not stored (HTTP 422)."""

    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_references(
    session: Session, spec: JobSpec, limits: IntakeLimits = DEFAULT_LIMITS
) -> str | None:
    """The architecture of the spec's checkpoint, once the checkpoint and dataset are known
    to exist and a zoo config is within ``limits``; else :class:`MissingReference` or
    ``ArtifactRejected`` (both 422)."""
    arch: str | None
    zoo = zoo_reference(spec.checkpoint_id, spec.zoo_config)
    if zoo is not None:
        arch = check_zoo_config(zoo, limits)["arch"]
    else:
        ckpt = session.get(CheckpointRow, spec.checkpoint_id)
        if ckpt is None:
            raise MissingReference(f"checkpoint {spec.checkpoint_id} does not exist")
        arch = ckpt.arch
    if spec.dataset_id is not None and session.get(DatasetRow, spec.dataset_id) is None:
        raise MissingReference(f"dataset {spec.dataset_id} does not exist")
    return arch


def submit_job(
    session: Session,
    spec: JobSpec,
    *,
    limits: IntakeLimits = DEFAULT_LIMITS,
    idempotency_key: str | None = None,
) -> tuple[JobRow, bool]:
    """Queue one job (or find the one queued with this Idempotency-Key)."""
    arch = check_references(session, spec, limits)
    return repo.create_job(session, spec, arch=arch, idempotency_key=idempotency_key)


@dataclass
class SubmittedBatch:
    id: str
    jobs: list[JobRow]
    created: bool


def submit_batch(
    session: Session,
    spec: BatchSpec,
    *,
    limits: IntakeLimits = DEFAULT_LIMITS,
    idempotency_key: str | None = None,
) -> SubmittedBatch:
    """Queue a job per checkpoint in one transaction, after every reference is checked.

    With an Idempotency-Key, job ``i`` carries the key ``batch:<key>:<i>``; a batch that
    finds the key of its first job stored is a retry, and must match that batch job for
    job. An insert that fails (a key taken meanwhile) rolls the whole batch back."""
    specs = spec.job_specs()
    archs = [check_references(session, job, limits) for job in specs]
    keys = [
        batch_job_key(idempotency_key, i) if idempotency_key else None for i in range(len(specs))
    ]
    if idempotency_key:
        earlier = _earlier_batch(session, keys, specs)
        if earlier is not None:
            return earlier
    batch_id = uuid.uuid4().hex
    rows = [
        repo.add_job(session, job, arch=arch, idempotency_key=key, batch_id=batch_id)
        for job, arch, key in zip(specs, archs, keys, strict=True)
    ]
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        earlier = _earlier_batch(session, keys, specs) if idempotency_key else None
        if earlier is None:
            raise repo.Conflict(
                "Idempotency-Key was already used with a different request body"
            ) from None
        return earlier
    return SubmittedBatch(batch_id, rows, created=True)


def _earlier_batch(
    session: Session, keys: list[str | None], specs: list[JobSpec]
) -> SubmittedBatch | None:
    """The batch an earlier request with these keys queued, if any; a Conflict unless it
    holds exactly these jobs."""
    first = session.scalar(select(JobRow).where(JobRow.idempotency_key == keys[0]))
    if first is None:
        return None
    if first.batch_id is None:  # the key of a single job
        raise repo.Conflict("Idempotency-Key was already used with a different request body")
    stored = {
        row.idempotency_key: row
        for row in session.scalars(select(JobRow).where(JobRow.batch_id == first.batch_id))
    }
    rows = [stored.get(key) for key in keys]
    if len(stored) != len(keys) or any(row is None for row in rows):
        raise repo.Conflict("Idempotency-Key was already used with a different request body")
    found = [row for row in rows if row is not None]
    for row, job in zip(found, specs, strict=True):
        repo.same_request(row, job)
    return SubmittedBatch(first.batch_id, found, created=False)
