"""``/v1/layers``: stored spectra across jobs (filters, sorting, keyset pages, CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse

from api_schemas import LayerBrief, LayerDetail, LayerRow, Page
from api_schemas.wire import INT64_MAX
from service.deps import ReadAuth, ServicesDep, SessionDep
from service.problems import problems
from service.store import queries

router = APIRouter(tags=["layers"], responses=problems(401, 422, 503))
LayerId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a stored layer's id")]

CSV_COLUMNS = (
    "id",
    "job_id",
    "checkpoint_id",
    "architecture",
    "name",
    "kind",
    "parameter",
    "shape",
    "k",
    "alpha",
    "r2_alpha",
    "alpha_se",
    "gamma",
    "r2_gamma",
    "s",
    "r2_s",
    "s_eig",
    "predicted_s",
    "triangle_relative_error",
    "pr_h",
    "n_valid",
    "n_neg",
    "node_id",
    "wall_seconds",
    "flags",
    "step",
)


def split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def layer_filters(
    job_id: Annotated[str | None, Query(description="job id(s), comma-separated")] = None,
    checkpoint_id: str | None = None,
    arch: str | None = None,
    kind: Annotated[str | None, Query(description="layer kind(s), comma-separated")] = None,
    node_id: str | None = None,
    alpha_min: float | None = None,
    alpha_max: float | None = None,
    gamma_min: float | None = None,
    gamma_max: float | None = None,
    s_min: float | None = None,
    s_max: float | None = None,
    r2_min: Annotated[float | None, Query(description="minimum R² of the alpha fit")] = None,
    flag: Annotated[str | None, Query(description="layers carrying this flag")] = None,
    job_name: Annotated[str | None, Query(description="layers of jobs of this name")] = None,
    tag: Annotated[str | None, Query(description="jobs' tag(s), comma-separated: all")] = None,
    step: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="checkpoints at this training step")
    ] = None,
    step_min: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    step_max: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
) -> queries.LayerFilters:
    return queries.LayerFilters(
        job_id=split_csv(job_id),
        checkpoint_id=checkpoint_id,
        arch=arch,
        kind=split_csv(kind),
        node_id=node_id,
        alpha_min=alpha_min,
        alpha_max=alpha_max,
        gamma_min=gamma_min,
        gamma_max=gamma_max,
        s_min=s_min,
        s_max=s_max,
        r2_min=r2_min,
        flag=flag,
        job_name=job_name,
        tags=split_csv(tag),
        step=step,
        step_min=step_min,
        step_max=step_max,
    )


FiltersDep = Annotated[queries.LayerFilters, Depends(layer_filters)]
SortQuery = Annotated[
    str | None, Query(description="column, `-column` for descending (e.g. -alpha)")
]


def _checked_sort(sort: str | None) -> str | None:
    try:
        queries.parse_sort(sort)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return sort


@router.get(
    "/layers",
    response_model=Page[LayerRow] | Page[LayerBrief],
    dependencies=[ReadAuth],
    responses=problems(400),
)
def list_layers(
    session: SessionDep,
    filters: FiltersDep,
    sort: SortQuery = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    view: Annotated[
        Literal["full", "brief"],
        Query(description="`full`: every array of each layer; `brief`: indexed scalars only"),
    ] = "full",
) -> Response:
    sort = _checked_sort(sort)
    page: Page[LayerRow] | Page[LayerBrief]
    if view == "brief":
        briefs, next_cursor = queries.query_layer_briefs(
            session, filters, sort=sort, cursor=cursor, limit=limit
        )
        page = Page[LayerBrief](items=briefs, next_cursor=next_cursor)
    else:
        rows, next_cursor = queries.query_layers(
            session, filters, sort=sort, cursor=cursor, limit=limit
        )
        page = Page[LayerRow](items=rows, next_cursor=next_cursor)
    # rows were validated once when read; serialise without a second validation pass
    return Response(page.model_dump_json(), media_type="application/json")


@router.get("/layers.csv", dependencies=[ReadAuth], response_class=StreamingResponse)
def export_layers_csv(
    services: ServicesDep, filters: FiltersDep, sort: SortQuery = None
) -> StreamingResponse:
    """The filtered layer table as CSV (scalar columns; arrays via /v1/layers/{id})."""
    sort = _checked_sort(sort)

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        cursor: str | None = None
        with services.sessions() as session:
            while True:
                rows, cursor = queries.query_layers(
                    session, filters, sort=sort, cursor=cursor, limit=500
                )
                for row in rows:
                    data = row.model_dump()
                    data["shape"] = "x".join(str(x) for x in row.shape)
                    data["flags"] = ";".join(row.flags)
                    writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if cursor is None:
                    break

    return StreamingResponse(
        generate(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="layers.csv"'},
    )


@router.get(
    "/layers/{layer_id}",
    response_model=LayerDetail,
    dependencies=[ReadAuth],
    responses=problems(404),
)
def get_layer(layer_id: LayerId, session: SessionDep) -> LayerDetail:
    """One layer with every array (sigma, h, eigenvalues, Phi, ...) and its provenance."""
    row = queries.get_layer(session, layer_id)
    if row is None:
        raise HTTPException(404, f"layer {layer_id} not found")
    return queries.layer_detail(row)
