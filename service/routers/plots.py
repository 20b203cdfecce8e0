"""PNG pictures of stored spectra: one layer, and s vs αγ over any set of jobs.

Plain ``def`` endpoints: FastAPI runs them in its thread pool, so neither the database
query nor matplotlib blocks the event loop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from api_schemas import LayerRow
from api_schemas.wire import split_csv
from service.deps import ReadAuth, SessionDep
from service.problems import problems
from service.routers.layers import LayerId
from service.store import queries

router = APIRouter(tags=["plots"], responses=problems(401, 404, 422, 503))
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "a PNG image"}
}
MAX_LAYERS = 20_000


@router.get("/plots/identity", dependencies=[ReadAuth], response_class=Response, responses=PNG)
def identity_plot(
    session: SessionDep,
    jobs: Annotated[
        str | None, Query(description="job ids, comma-separated (all if omitted)")
    ] = None,
    kind: Annotated[str | None, Query(description="layer kinds, comma-separated")] = None,
) -> Response:
    """Measured s against predicted αγ per layer, with the identity line, the median error,
    the algebraic bound of the identity and the Lanczos exponent s_eig."""
    filters = queries.LayerFilters(job_id=split_csv(jobs), kind=split_csv(kind))
    rows: list[LayerRow] = []
    cursor: str | None = None
    while len(rows) < MAX_LAYERS:
        page, cursor = queries.query_layers(session, filters, cursor=cursor, limit=1000)
        rows.extend(page)
        if cursor is None:
            break
    if not rows:
        raise HTTPException(404, "no stored layers match")
    from service.plots import identity_figure

    n_jobs = len({r.job_id for r in rows})
    title = f"s vs αγ: {len(rows)} layers of {n_jobs} job{'s' if n_jobs > 1 else ''}"
    png = identity_figure([r.profile() for r in rows], title)
    return Response(png, media_type="image/png")


@router.get(
    "/layers/{layer_id}/plot", dependencies=[ReadAuth], response_class=Response, responses=PNG
)
def layer_plot(layer_id: LayerId, session: SessionDep) -> Response:
    """h vs σ with the α fit, σ vs k, and sorted h with the Lanczos eigenvalues."""
    row = queries.get_layer(session, layer_id)
    if row is None:
        raise HTTPException(404, f"layer {layer_id} not found")
    from service.plots import layer_figure

    png = layer_figure(queries.layer_row(row, row.profile_blob).profile())
    return Response(png, media_type="image/png")
