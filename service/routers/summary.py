"""``/v1/summary``: alpha, gamma, s by layer kind (mean, sd, n) over any set of jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api_schemas import Summary
from api_schemas.wire import split_csv
from service.deps import SessionDep, read_route
from service.problems import problems
from service.store import queries

router = APIRouter(tags=["layers"], responses=problems(401, 422, 503))


@router.get("/summary", **read_route(Summary))
def summary(
    session: SessionDep,
    jobs: Annotated[
        str | None, Query(description="job ids, comma-separated; all when empty")
    ] = None,
) -> Summary:
    job_ids = split_csv(jobs) or []
    return Summary(jobs=job_ids, rows=queries.summary(session, job_ids))
