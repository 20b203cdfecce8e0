"""``/v1/datasets``: streamed upload of .npz / .safetensors data, list, inspect; built-ins."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api_schemas import Dataset, Page
from api_schemas.enums import BUILTIN_DATASETS
from service.deps import SessionDep, read_route
from service.problems import problems
from service.routers.artifacts import ArtifactKind, UploadDoc, add_artifact_routes
from service.store import repo, uploads
from service.store.models import DatasetRow

router = APIRouter(tags=["datasets"], responses=problems(401, 422, 503))

KIND = ArtifactKind(Dataset, Page[Dataset], DatasetRow, repo.dataset_model, uploads.add_dataset)
add_artifact_routes(
    router,
    "datasets",
    KIND,
    UploadDoc(
        "Upload a dataset (.npz or .safetensors with 'inputs' and 'targets')",
        ".npz or .safetensors holding 'inputs' and 'targets'",
    ),
)


@router.get("/datasets/{dataset_id}", **read_route(Dataset, 404))
def get_dataset(dataset_id: str, session: SessionDep) -> Dataset:
    if dataset_id in BUILTIN_DATASETS:
        return Dataset(id=dataset_id, format="builtin")
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise HTTPException(404, f"dataset {dataset_id} not found")
    return repo.dataset_model(row)
