"""``/v1/datasets``: streamed upload of .npz / .safetensors data, list, inspect; built-ins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api_schemas import Dataset, Page
from service.artifacts import BUILTIN_DATASETS, known_suffix, validate_dataset
from service.deps import ReadAuth, ServicesDep, SessionDep, WriteAuth
from service.problems import problems
from service.store import repo
from service.store.models import DatasetRow, utcnow
from service.upload import receive_upload

router = APIRouter(tags=["datasets"], responses=problems(401, 422, 503))

UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/datasets",
    response_model=Dataset,
    status_code=201,
    dependencies=[WriteAuth],
    openapi_extra=UPLOAD_DOC,
    responses=problems(400, 413, 415),
    summary="Upload a dataset (.npz or .safetensors with 'inputs' and 'targets')",
)
async def upload_dataset(
    request: Request, response: Response, services: ServicesDep, session: SessionDep
) -> Dataset:
    settings = services.settings
    upload = await receive_upload(
        request,
        services.artifacts.tmp_dir,
        settings.max_upload_bytes,
        max_fields=settings.max_form_fields,
        max_field_bytes=settings.max_form_field_bytes,
    )
    try:
        upload.with_suffix(known_suffix(upload.filename))
        info = await run_in_threadpool(
            validate_dataset, upload.tmp_path, upload.filename, settings.intake_limits
        )
        existing = session.get(DatasetRow, upload.sha256)
        if existing is not None:
            upload.discard()
            response.status_code = 200
            return repo.dataset_model(existing)
        path = services.artifacts.commit(upload, info.suffix)
    except BaseException:
        upload.discard()
        raise
    row = DatasetRow(
        id=upload.sha256,
        sha256=upload.sha256,
        format=info.format,
        filename=upload.filename,
        size=upload.size,
        n_examples=info.n_examples,
        path=str(path.resolve()),
        created_at=utcnow(),
    )
    stored = repo.add_or_get(session, row)
    assert isinstance(stored, DatasetRow)
    return repo.dataset_model(stored)


@router.get(
    "/datasets", response_model=Page[Dataset], dependencies=[ReadAuth], responses=problems(400)
)
def list_datasets(
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[Dataset]:
    rows, next_cursor = repo.page_by_created(session, DatasetRow, cursor, limit)
    return Page[Dataset](items=[repo.dataset_model(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/datasets/{dataset_id}",
    response_model=Dataset,
    dependencies=[ReadAuth],
    responses=problems(404),
)
def get_dataset(dataset_id: str, session: SessionDep) -> Dataset:
    if dataset_id in BUILTIN_DATASETS:
        return Dataset(id=dataset_id, format="builtin")
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise HTTPException(404, f"dataset {dataset_id} not found")
    return repo.dataset_model(row)
