"""``/v1/checkpoints``: streamed upload into the content-addressed store, list, inspect."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api_schemas import Checkpoint, Page
from service.artifacts import (
    ZOO_PREFIX,
    ArtifactRejected,
    CheckpointInfo,
    discard_directory,
    known_suffix,
    resolve_zoo_config,
    validate_checkpoint,
)
from service.deps import ReadAuth, ServicesDep, SessionDep, WriteAuth
from service.problems import problems
from service.store import repo
from service.store.models import CheckpointRow, utcnow
from service.upload import receive_upload

router = APIRouter(tags=["checkpoints"], responses=problems(401, 422, 503))

UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "model.safetensors (+ config), a .zip of a Hugging "
                            "Face directory (config.json, model.safetensors, tokenizer files), "
                            "or a .pt2 program",
                        },
                        "config": {"type": "string", "description": "architecture config JSON"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/checkpoints",
    response_model=Checkpoint,
    status_code=201,
    dependencies=[WriteAuth],
    openapi_extra=UPLOAD_DOC,
    responses=problems(400, 409, 413, 415),
    summary="Upload a checkpoint (.safetensors + config, a Hugging Face .zip, or .pt2)",
)
async def upload_checkpoint(
    request: Request, response: Response, services: ServicesDep, session: SessionDep
) -> Checkpoint:
    settings = services.settings
    upload = await receive_upload(
        request,
        services.artifacts.tmp_dir,
        settings.max_upload_bytes,
        max_fields=settings.max_form_fields,
        max_field_bytes=settings.max_form_field_bytes,
    )
    info: CheckpointInfo | None = None
    try:
        upload.with_suffix(known_suffix(upload.filename))
        info = await run_in_threadpool(
            validate_checkpoint,
            upload.tmp_path,
            upload.filename,
            upload.fields.get("config"),
            allow_pickle=settings.allow_pickle_checkpoints,
            limits=settings.intake_limits,
            probe_timeout_s=settings.pickle_probe_timeout_s,
        )
        existing = session.get(CheckpointRow, upload.sha256)
        config_json = json.dumps(info.config, sort_keys=True) if info.config else None
        if existing is not None:
            if config_json and existing.config_json and existing.config_json != config_json:
                raise HTTPException(409, "these weights are stored with a different config")
            upload.discard()
            discard_directory(info)
            response.status_code = 200
            return repo.checkpoint_model(existing)
        path = services.artifacts.commit(upload, info.suffix)
        if info.directory is not None:  # a Hugging Face archive: jobs load the directory
            path = services.artifacts.commit_directory(info.directory, upload.sha256)
    except BaseException:
        upload.discard()
        discard_directory(info)
        raise
    row = CheckpointRow(
        id=upload.sha256,
        sha256=upload.sha256,
        format=info.format,
        arch=info.arch,
        config_json=config_json,
        filename=upload.filename,
        size=upload.size,
        path=str(path.resolve()),
        created_at=utcnow(),
    )
    stored = repo.add_or_get(session, row)
    assert isinstance(stored, CheckpointRow)
    return repo.checkpoint_model(stored)


@router.get(
    "/checkpoints",
    response_model=Page[Checkpoint],
    dependencies=[ReadAuth],
    responses=problems(400),
)
def list_checkpoints(
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[Checkpoint]:
    rows, next_cursor = repo.page_by_created(session, CheckpointRow, cursor, limit)
    return Page[Checkpoint](items=[repo.checkpoint_model(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/checkpoints/{checkpoint_id}",
    response_model=Checkpoint,
    dependencies=[ReadAuth],
    responses=problems(404),
)
def get_checkpoint(checkpoint_id: str, session: SessionDep) -> Checkpoint:
    if checkpoint_id.startswith(ZOO_PREFIX):
        try:
            config = resolve_zoo_config({"arch": checkpoint_id[len(ZOO_PREFIX) :]})
        except ArtifactRejected as exc:
            raise HTTPException(404, exc.message) from exc
        return Checkpoint(
            id=checkpoint_id, format="zoo", architecture=config["arch"], config=config
        )
    row = session.get(CheckpointRow, checkpoint_id)
    if row is None:
        raise HTTPException(404, f"checkpoint {checkpoint_id} not found")
    return repo.checkpoint_model(row)
