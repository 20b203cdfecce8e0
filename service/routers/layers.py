"""``/v1/layers``: stored spectra across jobs (filters, sorting, keyset pages, CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from api_schemas import LayerBrief, LayerDetail, LayerRow, Page
from api_schemas.enums import LayerView
from api_schemas.layer_fields import CSV_FIELDS, FILTER_PARAMS
from api_schemas.layer_filters import LayerFilterQuery
from api_schemas.wire import INT64_MAX, split_csv
from service.deps import ReadAuth, ServicesDep, SessionDep, read_route
from service.problems import problems
from service.store import queries

router = APIRouter(tags=["layers"], responses=problems(401, 422, 503))
LayerId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a stored layer's id")]

CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in CSV_FIELDS)


async def layer_filters(
    query: Annotated[LayerFilterQuery, Query()],
) -> queries.LayerFilters:
    """The layer listings' filters from the query: every parameter of the registry
    (``api_schemas.layer_fields.FILTER_PARAMS``) and the job labels, validated as one model.
    ``async``: it does no I/O, and FastAPI runs a sync dependency on a worker thread."""
    values = query.model_dump()
    tags = split_csv(values.pop("tag"))
    job_name = values.pop("job_name")
    for name, param in FILTER_PARAMS.items():
        if param.op == "in":
            values[name] = split_csv(values[name])
    return queries.LayerFilters(job_name=job_name, tags=tags, **values)


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


@router.get("/layers", **read_route(Page[LayerRow] | Page[LayerBrief], 400))
def list_layers(
    session: SessionDep,
    services: ServicesDep,
    filters: FiltersDep,
    sort: SortQuery = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    view: Annotated[
        LayerView,
        Query(description="`full`: every array of each layer; `brief`: indexed scalars only"),
    ] = "full",
) -> Response:
    # each row's JSON is encoded once per process (store/json_cache.py)
    body = queries.query_layer_page_json(
        session,
        filters,
        services.layer_cache,
        view,
        sort=_checked_sort(sort),
        cursor=cursor,
        limit=limit,
    )
    return Response(body, media_type="application/json")


def csv_cells(row: LayerRow) -> list[Any]:
    """One CSV line: shapes as ``4x4``, flags ``;``-separated, nulls empty."""
    cells: list[Any] = []
    for f in CSV_FIELDS:
        value = getattr(row, f.name)
        if f.type == "shape":
            value = "x".join(str(x) for x in value)
        elif f.type == "flags":
            value = ";".join(value)
        cells.append("" if value is None else value)
    return cells


@router.get("/layers.csv", dependencies=[ReadAuth], response_class=StreamingResponse)
def export_layers_csv(
    services: ServicesDep, filters: FiltersDep, sort: SortQuery = None
) -> StreamingResponse:
    """The filtered layer table as CSV (scalar columns; arrays via /v1/layers/{id})."""
    sort = _checked_sort(sort)
    # the first page is read before the response starts: a query the database refuses is
    # then a problem document, not a 200 cut off mid-stream
    session = services.sessions()
    try:
        rows, cursor = queries.query_layers(session, filters, sort=sort, limit=500)
    except BaseException:
        session.close()
        raise

    def generate() -> Iterator[str]:
        nonlocal rows, cursor
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        try:
            while True:
                for row in rows:
                    writer.writerow(csv_cells(row))
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if cursor is None:
                    break
                rows, cursor = queries.query_layers(
                    session, filters, sort=sort, cursor=cursor, limit=500
                )
        finally:
            session.close()

    return StreamingResponse(
        generate(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="layers.csv"'},
        background=BackgroundTask(session.close),  # also when the client left before a byte
    )


@router.get("/layers/{layer_id}", **read_route(LayerDetail, 404))
def get_layer(layer_id: LayerId, session: SessionDep) -> LayerDetail:
    """One layer with every array (sigma, h, eigenvalues, Phi, ...) and its provenance."""
    row = queries.get_layer(session, layer_id)
    if row is None:
        raise HTTPException(404, f"layer {layer_id} not found")
    return queries.layer_detail(row)
