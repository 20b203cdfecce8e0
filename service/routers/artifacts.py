"""The routes both artifact kinds share, declared once: ``POST /v1/<kind>`` (a streamed
multipart upload, validated and stored by ``service.store.uploads``) and ``GET /v1/<kind>``
(newest first, keyset pages). Each kind's router adds its own ``GET /v1/<kind>/{id}``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request, Response

from api_schemas import Checkpoint, Dataset, Page
from service.deps import AddUpload, ServicesDep, SessionDep, WriteAuth, accept_upload, read_route
from service.problems import problems
from service.store import repo
from service.store.models import CheckpointRow, DatasetRow

WireT = TypeVar("WireT", Checkpoint, Dataset)
RowT = TypeVar("RowT", CheckpointRow, DatasetRow)


@dataclass(frozen=True)
class ArtifactKind(Generic[WireT, RowT]):
    """One kind of artifact: its wire model (and page of them), its table, and how an
    upload of it is added to the store."""

    wire: type[WireT]
    page: type[Page[WireT]]
    row: type[RowT]
    to_wire: Callable[[RowT], WireT]
    add: AddUpload[WireT]


@dataclass(frozen=True)
class UploadDoc:
    """What the OpenAPI schema says of an upload (FastAPI cannot see a streamed body)."""

    summary: str
    file_description: str
    form_fields: dict[str, str] = field(default_factory=dict)
    problems: tuple[int, ...] = (400, 408, 413, 415)

    def request_body(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "file": {"type": "string", "format": "binary", "description": self.file_description}
        }
        for name, description in self.form_fields.items():
            properties[name] = {"type": "string", "description": description}
        schema = {"type": "object", "required": ["file"], "properties": properties}
        content = {"multipart/form-data": {"schema": schema}}
        return {"requestBody": {"required": True, "content": content}}


def add_artifact_routes(
    router: APIRouter, plural: str, kind: ArtifactKind[WireT, RowT], doc: UploadDoc
) -> None:
    """Add ``POST /<plural>`` (the upload of ``kind``) and ``GET /<plural>`` to ``router``."""

    @router.post(
        f"/{plural}",
        name=f"upload_{plural.removesuffix('s')}",
        response_model=kind.wire,
        status_code=201,
        dependencies=[WriteAuth],
        openapi_extra=doc.request_body(),
        responses=problems(*doc.problems),
        summary=doc.summary,
    )
    async def upload(
        request: Request, response: Response, services: ServicesDep, session: SessionDep
    ) -> WireT:
        return await accept_upload(request, response, services, session, kind.add)

    @router.get(f"/{plural}", name=f"list_{plural}", **read_route(kind.page, 400))
    def listing(
        session: SessionDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Page[WireT]:
        return repo.artifact_page(session, kind.row, kind.to_wire, cursor, limit)
