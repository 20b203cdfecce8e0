"""The routes both artifact kinds share, declared once: ``POST /v1/<kind>`` (a streamed
multipart upload, validated and stored by ``service.store.uploads``) and ``GET /v1/<kind>``
(newest first, keyset pages). Each kind's router adds its own ``GET /v1/<kind>/{id}``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request, Response

from api_schemas import Checkpoint, Dataset, Page
from service.deps import AddUpload, ReadAuth, ServicesDep, SessionDep, WriteAuth, accept_upload
from service.problems import problems
from service.store import repo
from service.store.models import CheckpointRow, DatasetRow

WireT = TypeVar("WireT", Checkpoint, Dataset)
RowT = TypeVar("RowT", CheckpointRow, DatasetRow)


@dataclass(frozen=True)
class ArtifactKind(Generic[WireT, RowT]):
    """One kind of artifact: its path, wire model, table, and how an upload is added."""

    plural: str
    wire: type[WireT]
    page: type[Page[WireT]]
    row: type[RowT]
    to_wire: Callable[[RowT], WireT]
    add: AddUpload[WireT]
    summary: str
    file_description: str
    form_fields: dict[str, str] = field(default_factory=dict)
    upload_problems: tuple[int, ...] = (400, 413, 415)

    def upload_doc(self) -> dict[str, Any]:
        """The multipart body in the OpenAPI schema (FastAPI cannot see a streamed one)."""
        properties: dict[str, Any] = {
            "file": {"type": "string", "format": "binary", "description": self.file_description}
        }
        for name, description in self.form_fields.items():
            properties[name] = {"type": "string", "description": description}
        schema = {"type": "object", "required": ["file"], "properties": properties}
        content = {"multipart/form-data": {"schema": schema}}
        return {"requestBody": {"required": True, "content": content}}


def add_artifact_routes(router: APIRouter, kind: ArtifactKind[WireT, RowT]) -> None:
    """Add the upload and the listing of ``kind`` to ``router``."""
    singular = kind.plural.removesuffix("s")

    async def upload(
        request: Request, response: Response, services: ServicesDep, session: SessionDep
    ) -> WireT:
        return await accept_upload(request, response, services, session, kind.add)

    def listing(
        session: SessionDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Page[WireT]:
        return repo.artifact_page(session, kind.row, kind.to_wire, cursor, limit)

    router.add_api_route(
        f"/{kind.plural}",
        upload,
        methods=["POST"],
        name=f"upload_{singular}",
        response_model=kind.wire,
        status_code=201,
        dependencies=[WriteAuth],
        openapi_extra=kind.upload_doc(),
        responses=problems(*kind.upload_problems),
        summary=kind.summary,
    )
    router.add_api_route(
        f"/{kind.plural}",
        listing,
        methods=["GET"],
        name=f"list_{kind.plural}",
        response_model=kind.page,
        dependencies=[ReadAuth],
        responses=problems(400),
    )
