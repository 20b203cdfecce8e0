"""``/v1/checkpoints``: streamed upload into the content-addressed store, list, inspect."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api_schemas import Checkpoint, Page
from service.artifacts import ArtifactRejected, resolve_zoo_config, zoo_reference
from service.deps import SessionDep, read_route
from service.problems import problems
from service.routers.artifacts import ArtifactKind, UploadDoc, add_artifact_routes
from service.store import repo, uploads
from service.store.models import CheckpointRow

router = APIRouter(tags=["checkpoints"], responses=problems(401, 422, 503))

KIND = ArtifactKind(
    Checkpoint, Page[Checkpoint], CheckpointRow, repo.checkpoint_model, uploads.add_checkpoint
)
add_artifact_routes(
    router,
    "checkpoints",
    KIND,
    UploadDoc(
        "Upload a checkpoint (.safetensors + config, a Hugging Face .zip, or .pt2)",
        "model.safetensors (+ config), a .zip of a Hugging Face directory (config.json, "
        "model.safetensors, tokenizer files), or a .pt2 program",
        form_fields={"config": "architecture config JSON"},
        problems=(400, 408, 409, 413, 415),
    ),
)


@router.get("/checkpoints/{checkpoint_id}", **read_route(Checkpoint, 404))
def get_checkpoint(checkpoint_id: str, session: SessionDep) -> Checkpoint:
    zoo = zoo_reference(checkpoint_id)
    if zoo is not None:
        try:
            config = resolve_zoo_config(zoo)
        except ArtifactRejected as exc:
            raise HTTPException(404, exc.message) from exc
        return Checkpoint(
            id=checkpoint_id, format="zoo", architecture=config["arch"], config=config
        )
    row = session.get(CheckpointRow, checkpoint_id)
    if row is None:
        raise HTTPException(404, f"checkpoint {checkpoint_id} not found")
    return repo.checkpoint_model(row)
