"""Read side of stored spectra: filtered/sorted/keyset-paginated layers, summaries, metrics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, joinedload

from api_schemas import (
    JobPreconditioner,
    LayerBrief,
    LayerDetail,
    LayerPreconditioner,
    LayerRow,
    Provenance,
    SummaryRow,
)
from service.store import paging
from service.store.codec import unpack_profile, unpack_profile_json
from service.store.labels import JobLabelFilters
from service.store.models import JobRow, LayerProfileRow, LayerResultRow

SORTABLE: dict[str, InstrumentedAttribute[Any]] = {
    "id": LayerResultRow.id,
    "name": LayerResultRow.layer_name,
    "kind": LayerResultRow.kind,
    "alpha": LayerResultRow.alpha,
    "gamma": LayerResultRow.gamma,
    "s": LayerResultRow.s,
    "s_eig": LayerResultRow.s_eig,
    "predicted_s": LayerResultRow.predicted_s,
    "triangle_relative_error": LayerResultRow.triangle_relative_error,
    "r2_alpha": LayerResultRow.r2_alpha,
    "r2_gamma": LayerResultRow.r2_gamma,
    "pr_h": LayerResultRow.pr_h,
    "wall_seconds": LayerResultRow.wall_seconds,
    "step": LayerResultRow.step,
}


@dataclass
class LayerFilters:
    job_id: list[str] | None = None
    checkpoint_id: str | None = None
    arch: str | None = None
    kind: list[str] | None = None
    node_id: str | None = None
    alpha_min: float | None = None
    alpha_max: float | None = None
    gamma_min: float | None = None
    gamma_max: float | None = None
    s_min: float | None = None
    s_max: float | None = None
    r2_min: float | None = None
    flag: str | None = None
    job_name: str | None = None
    tags: list[str] | None = None
    step: int | None = None
    step_min: int | None = None
    step_max: int | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        r = LayerResultRow
        out: list[ColumnElement[bool]] = []
        if self.job_id:
            out.append(r.job_id.in_(self.job_id))
        if self.checkpoint_id:
            out.append(r.checkpoint_id == self.checkpoint_id)
        if self.arch:
            out.append(r.arch == self.arch)
        if self.kind:
            out.append(r.kind.in_(self.kind))
        if self.node_id:
            out.append(r.node_id == self.node_id)
        for col, lo, hi in (
            (r.alpha, self.alpha_min, self.alpha_max),
            (r.gamma, self.gamma_min, self.gamma_max),
            (r.s, self.s_min, self.s_max),
            (r.r2_alpha, self.r2_min, None),
        ):
            if lo is not None:
                out.append(col >= lo)
            if hi is not None:
                out.append(col <= hi)
        if self.flag:
            out.append(r.flags.like('%"' + self.flag.replace('"', "") + '"%'))
        for lo, hi in ((self.step, self.step), (self.step_min, self.step_max)):
            if lo is not None:
                out.append(r.step >= lo)
            if hi is not None:
                out.append(r.step <= hi)
        of_jobs = JobLabelFilters(name=self.job_name, tags=self.tags).job_clauses()
        if of_jobs:
            out.append(r.job_id.in_(select(JobRow.id).where(*of_jobs)))
        return out


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """``alpha`` ascending, ``-alpha`` descending; nulls always last; ties by id."""
    sort = (sort or "id").strip()
    desc = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in SORTABLE:
        raise ValueError(f"cannot sort by {key!r}; one of: {', '.join(sorted(SORTABLE))}")
    return key, desc


BRIEF_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = (
    LayerResultRow.id,
    LayerResultRow.job_id,
    LayerResultRow.checkpoint_id,
    LayerResultRow.arch,
    LayerResultRow.node_id,
    LayerResultRow.layer_name,
    LayerResultRow.kind,
    LayerResultRow.k,
    LayerResultRow.alpha,
    LayerResultRow.r2_alpha,
    LayerResultRow.gamma,
    LayerResultRow.r2_gamma,
    LayerResultRow.s,
    LayerResultRow.s_eig,
    LayerResultRow.predicted_s,
    LayerResultRow.triangle_relative_error,
    LayerResultRow.pr_h,
    LayerResultRow.wall_seconds,
    LayerResultRow.flags,
    LayerResultRow.step,
)


def layer_order(sort: str | None) -> paging.Keyset:
    """The layer listing's keyset for ``sort``: the column, nulls last, ties by id ascending
    (sorted by id itself, the id runs in the sort's direction)."""
    key, desc = parse_sort(sort)
    return paging.Keyset(
        "layers",
        key,
        SORTABLE[key],
        LayerResultRow.id,
        descending=desc,
        tie_descending=desc and key == "id",
    )


def _keyset_page(
    session: Session,
    what: Select[Any],
    filters: LayerFilters,
    sort: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """One page of ``what`` (rows or column tuples) in sort order, and the next cursor."""
    return paging.page(session, what.where(*filters.clauses()), layer_order(sort), cursor, limit)


def query_layers(
    session: Session,
    filters: LayerFilters,
    *,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[LayerRow], str | None]:
    """A page of full layer rows (every array of the stored profile)."""
    # the page is chosen on the indexed table alone; only its rows' profiles are read
    rows, next_cursor = _keyset_page(session, select(LayerResultRow), filters, sort, cursor, limit)
    ids = [row[0].id for row in rows]
    blobs: dict[int, bytes] = {
        layer_id: blob
        for layer_id, blob in session.execute(
            select(LayerProfileRow.layer_id, LayerProfileRow.blob).where(
                LayerProfileRow.layer_id.in_(ids)
            )
        )
    }
    return [layer_row(row[0], blobs[row[0].id]) for row in rows], next_cursor


def query_layer_briefs(
    session: Session,
    filters: LayerFilters,
    *,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[LayerBrief], str | None]:
    """A page of brief rows: indexed columns only, the stored profile is never read."""
    rows, next_cursor = _keyset_page(session, select(*BRIEF_COLUMNS), filters, sort, cursor, limit)
    return [layer_brief(row._mapping) for row in rows], next_cursor


def layer_brief(values: Any) -> LayerBrief:
    r = LayerResultRow
    return LayerBrief.model_construct(
        id=values[r.id],
        job_id=values[r.job_id],
        checkpoint_id=values[r.checkpoint_id],
        architecture=values[r.arch],
        node_id=values[r.node_id],
        name=values[r.layer_name],
        kind=values[r.kind],
        k=values[r.k],
        alpha=values[r.alpha],
        r2_alpha=values[r.r2_alpha],
        gamma=values[r.gamma],
        r2_gamma=values[r.r2_gamma],
        s=values[r.s],
        s_eig=values[r.s_eig],
        predicted_s=values[r.predicted_s],
        triangle_relative_error=values[r.triangle_relative_error],
        pr_h=values[r.pr_h],
        wall_seconds=values[r.wall_seconds],
        flags=json.loads(values[r.flags] or "[]"),
        step=values[r.step],
    )


def layer_row(row: LayerResultRow, blob: bytes) -> LayerRow:
    layer = LayerRow.model_validate_json(
        unpack_profile_json(
            blob,
            id=row.id,
            job_id=row.job_id,
            checkpoint_id=row.checkpoint_id,
            architecture=row.arch,
            node_id=row.node_id,
            step=row.step,
        )
    )
    # profiles stored before the engine dropped NaN BIC values (JSON cannot carry them)
    if not all(math.isfinite(v) for v in layer.bic.values()):
        layer.bic = {k: v for k, v in layer.bic.items() if math.isfinite(v)}
    return layer


def layer_detail(row: LayerResultRow) -> LayerDetail:
    """``row`` must come from :func:`get_layer` (its stored profile loaded with it)."""
    base = layer_row(row, row.profile_blob)
    return LayerDetail(
        **base.model_dump(),
        dtype=row.dtype,
        top_k=row.top_k,
        provenance=Provenance(
            checkpoint_sha256=row.checkpoint_sha256,
            data_sha256=row.data_sha256,
            data_seed=row.data_seed,
            data_indices=json.loads(row.data_indices or "[]"),
            versions=json.loads(row.versions or "{}"),
            node_id=row.node_id,
            hostname=row.hostname,
        ),
    )


def get_layer(session: Session, layer_id: int) -> LayerResultRow | None:
    return session.get(
        LayerResultRow, layer_id, options=[joinedload(LayerResultRow.stored_profile)]
    )


def _stats(values: list[float]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return mean, sd, n


def summary(session: Session, job_ids: list[str]) -> list[SummaryRow]:
    """alpha, gamma, s by layer kind over the given jobs: mean, sample sd, n."""
    r = LayerResultRow
    stmt = select(r.kind, r.alpha, r.gamma, r.s)
    if job_ids:
        stmt = stmt.where(r.job_id.in_(job_ids))
    groups: dict[str, list[tuple[Any, Any, Any]]] = {}
    for kind, alpha, gamma, s in session.execute(stmt):
        groups.setdefault(kind, []).append((alpha, gamma, s))
    out = []
    for kind in sorted(groups):
        rows = groups[kind]
        fields: dict[str, Any] = {"kind": kind, "n": len(rows)}
        for i, name in enumerate(("alpha", "gamma", "s")):
            mean, sd, n = _stats([values[i] for values in rows])
            fields.update({f"{name}_mean": mean, f"{name}_sd": sd, f"{name}_n": n})
        out.append(SummaryRow(**fields))
    return out


def preconditioner(session: Session, job_id: str) -> JobPreconditioner:
    rows = session.scalars(
        select(LayerResultRow)
        .options(joinedload(LayerResultRow.stored_profile))
        .where(LayerResultRow.job_id == job_id)
        .order_by(LayerResultRow.id)
    )
    layers = []
    for row in rows:
        profile = unpack_profile(row.profile_blob)
        layers.append(
            LayerPreconditioner(
                layer_id=row.id,
                name=profile.name,
                kind=profile.kind,
                alpha=profile.alpha,
                params=profile.preconditioner,
            )
        )
    return JobPreconditioner(job_id=job_id, layers=layers)
