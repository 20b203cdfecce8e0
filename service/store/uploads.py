"""Accepting an upload: validate the received file, move it into the artifact store and
insert its row. One path for checkpoints and datasets; what differs is the validation and
the row it makes (``add_checkpoint``, ``add_dataset``).

Same bytes, same id: an upload of stored bytes keeps the stored row (``created`` False) and
its temp file is discarded. On any failure nothing is left: neither the temp file nor an
unpacked archive nor a row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from api_schemas import Checkpoint, Dataset
from service.artifacts import (
    ArtifactInfo,
    ArtifactStore,
    discard_directory,
    known_suffix,
    validate_checkpoint,
    validate_dataset,
)
from service.settings import Settings
from service.store import repo
from service.store.models import CheckpointRow, DatasetRow, utcnow
from service.upload import ReceivedUpload

ArtifactT = TypeVar("ArtifactT", CheckpointRow, DatasetRow)


def add_checkpoint(
    session: Session, artifacts: ArtifactStore, upload: ReceivedUpload, settings: Settings
) -> tuple[Checkpoint, bool]:
    """Validate and store an uploaded checkpoint (its config from the form field ``config``
    or the file); a :class:`repo.Conflict` when the same weights are stored with another
    config."""

    def validate(path: Path) -> tuple[ArtifactInfo, CheckpointRow]:
        info = validate_checkpoint(
            path,
            upload.filename,
            upload.fields.get("config"),
            allow_pickle=settings.allow_pickle_checkpoints,
            limits=settings.intake_limits,
            probe_timeout_s=settings.pickle_probe_timeout_s,
        )
        config_json = json.dumps(info.config, sort_keys=True) if info.config else None
        row = CheckpointRow(format=info.format, arch=info.arch, config_json=config_json)
        return info, row

    def same(stored: CheckpointRow, new: CheckpointRow) -> bool:
        both = new.config_json and stored.config_json
        return not both or stored.config_json == new.config_json

    stored, created = _accept(session, artifacts, upload, validate, same)
    return repo.checkpoint_model(stored), created


def add_dataset(
    session: Session, artifacts: ArtifactStore, upload: ReceivedUpload, settings: Settings
) -> tuple[Dataset, bool]:
    """Validate and store an uploaded dataset (loaded as a job would load it)."""

    def validate(path: Path) -> tuple[ArtifactInfo, DatasetRow]:
        info = validate_dataset(path, upload.filename, settings.intake_limits)
        return info, DatasetRow(format=info.format, n_examples=info.n_examples)

    stored, created = _accept(session, artifacts, upload, validate, lambda _stored, _new: True)
    return repo.dataset_model(stored), created


def _accept(
    session: Session,
    artifacts: ArtifactStore,
    upload: ReceivedUpload,
    validate: Callable[[Path], tuple[ArtifactInfo, ArtifactT]],
    same: Callable[[ArtifactT, ArtifactT], bool],
) -> tuple[ArtifactT, bool]:
    """``validate`` the temp file (named with its format's suffix), then keep the stored row
    of these bytes (``same`` must hold between it and the new one) or commit file and row."""
    info: ArtifactInfo | None = None
    try:
        upload.with_suffix(known_suffix(upload.filename))
        info, row = validate(upload.tmp_path)
        existing = session.get(type(row), upload.sha256)
        if existing is not None:
            if not same(existing, row):
                raise repo.Conflict("these weights are stored with a different config")
            upload.discard()
            discard_directory(info)
            return existing, False
        path = artifacts.commit(upload, info.suffix)
        if info.directory is not None:  # a Hugging Face archive: jobs load the directory
            path = artifacts.commit_directory(info.directory, upload.sha256)
    except BaseException:
        upload.discard()
        discard_directory(info)
        raise
    row.id = row.sha256 = upload.sha256
    row.filename, row.size = upload.filename, upload.size
    row.path, row.created_at = str(path.resolve()), utcnow()
    stored = repo.add_or_get(session, row)
    return stored, stored is row
