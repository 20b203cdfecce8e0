"""The dashboard's pages: jobs, one job, one layer, compare (server-rendered, read-only)."""

from __future__ import annotations

from typing import Annotated, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api_schemas import JobFilters, JobState, LayerProfile
from service.dashboard import data, figures
from service.dashboard.compare import CHANGE_THRESHOLD, diff_table, most_changed
from service.dashboard.gate import PageRoute, found, require_reader
from service.dashboard.paging import PageQuery, page_query
from service.dashboard.render import error_page, page
from service.deps import SessionDep
from service.store import queries, repo
from service.store.models import JobRow

router = APIRouter(
    prefix="/ui",
    include_in_schema=False,
    route_class=PageRoute,
    dependencies=[Depends(require_reader)],
)
JOB_STATES: tuple[str, ...] = get_args(JobState)

# the layer table's columns: (heading, sort key or None, tooltip)
LAYER_COLUMNS: tuple[tuple[str, str | None, str], ...] = (
    ("layer", "name", "layer name"),
    ("kind", "kind", "layer kind"),
    ("α ± CI", "alpha", "h ∝ σ^α; ± half the t 95% interval"),
    ("R²", "r2_alpha", "R² of the α fit"),
    ("γ", "gamma", "σ_k ∝ k^−γ"),
    ("s", "s", "rank-sorted h_(j) ∝ j^−s"),
    ("αγ", "predicted_s", "the identity's prediction of s"),
    ("identity error", "triangle_relative_error", "|s − αγ| / |s|"),
    ("bound", None, "the identity error's algebraic bound"),
    ("s_eig", "s_eig", "slope of the Lanczos eigenvalues"),
    ("PR", "pr_h", "participation ratio of h"),
    ("route", "route", LayerProfile.model_fields["route"].description or ""),
    ("flags", None, "what the engine flagged"),
)


def _ids(values: list[str] | None) -> list[str]:
    """``a,b`` and repeated ``?jobs=a&jobs=b`` alike, each once, in order."""
    out: dict[str, None] = {}
    for value in values or []:
        for part in value.split(","):
            if part.strip():
                out.setdefault(part.strip(), None)
    return list(out)


@router.get("", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    session: SessionDep,
    filters: Annotated[JobFilters, Query()],
    pages: Annotated[PageQuery, Depends(page_query(200))],
) -> Response:
    if any(s not in JOB_STATES for s in filters.states()):
        return error_page(
            request, 422, f"unknown state in {filters.state!r}; one of {', '.join(JOB_STATES)}"
        )
    rows, next_cursor = repo.list_jobs(session, filters, cursor=pages.cursor, limit=pages.limit)
    return page(
        request,
        "jobs.html",
        jobs=data.summaries(session, rows),
        states=JOB_STATES,
        filters=filters,
        pages=pages.links(request, next_cursor),
    )


@router.get("/progress")
def progress(session: SessionDep, ids: str = "") -> Response:
    """State and layer counts of the given jobs (polled by the jobs list and the job page)."""
    job_ids = _ids([ids])[:500]
    rows = [r for r in (session.get(JobRow, j) for j in job_ids) if r is not None]
    return JSONResponse(
        {
            s.id: {"state": s.state, "done": s.done, "total": s.total, "failed": s.failed}
            for s in data.summaries(session, rows)
        }
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_id: str,
    session: SessionDep,
    pages: Annotated[PageQuery, Depends(page_query(500))],
    sort: str | None = None,
) -> Response:
    job = found(data.job_summary(session, job_id), f"job {job_id}")
    try:
        sort_key, descending = queries.parse_sort(sort)
    except ValueError as exc:
        return error_page(request, 422, str(exc))
    filters = queries.LayerFilters(job_id=[job_id])
    rows, next_cursor = queries.query_layers(
        session, filters, sort=sort, cursor=pages.cursor, limit=pages.limit
    )
    points = data.layer_points(session, [job_id])[job_id]
    return page(
        request,
        "job.html",
        job=job,
        rows=rows,
        columns=LAYER_COLUMNS,
        sort=sort or "id",
        sort_key=sort_key,
        descending=descending,
        stored=data.stored_count(session, job_id),
        failed_layers=data.failed_layers(session, job_id),
        pages=pages.links(request, next_cursor),
        charts={
            "depth": figures.depth_figure(points),
            "identity": figures.identity_figure(points),
        },
    )


@router.get("/layers/{layer_id}", response_class=HTMLResponse)
def layer_page(request: Request, layer_id: int, session: SessionDep) -> Response:
    layer = queries.layer_detail(found(queries.get_layer(session, layer_id), f"layer {layer_id}"))
    return page(
        request,
        "layer.html",
        layer=layer,
        job=data.job_summary(session, layer.job_id),
        charts=figures.layer_figures(layer),
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    session: SessionDep,
    jobs: Annotated[list[str] | None, Query()] = None,
    metric: str = "alpha",
) -> Response:
    job_ids = _ids(jobs)[:50]
    if len(job_ids) < 2:
        return error_page(request, 422, "compare needs two or more jobs: /ui/compare?jobs=ID1,ID2")
    if metric not in figures.COMPARED_METRICS:
        return error_page(
            request, 422, f"metric must be one of {', '.join(figures.COMPARED_METRICS)}"
        )
    summaries = [data.job_summary(session, j) for j in job_ids]
    missing = [j for j, s in zip(job_ids, summaries, strict=True) if s is None]
    if missing:
        return error_page(request, 404, f"job {missing[0]} not found")
    compared = [s for s in summaries if s is not None]
    names, cells = figures.compare_grid(compared, data.layer_points(session, job_ids))
    return page(
        request,
        "compare.html",
        jobs=compared,
        metric=metric,
        metrics=figures.COMPARED_METRICS,
        charts=figures.compare_figures(compared, names, cells),
        diffs=most_changed(diff_table(compared, names, cells, metric)),
        n_layers=len(names),
        threshold=CHANGE_THRESHOLD,
        job_ids=",".join(job_ids),
    )
