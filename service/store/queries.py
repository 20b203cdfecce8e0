"""Read side of stored spectra: filtered/sorted/keyset-paginated layers, summaries, metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, joinedload

from api_schemas import (
    JobPreconditioner,
    LayerBrief,
    LayerDetail,
    LayerPreconditioner,
    LayerRow,
    SummaryRow,
)
from api_schemas.enums import LayerView
from api_schemas.layer_fields import (
    BRIEF_FIELDS,
    COLUMN_FIELDS,
    FILTER_PARAMS,
    SORTABLE_FIELDS,
    FilterParam,
    LayerField,
)
from api_schemas.queries import StoredLayer
from service.store import paging, provenance
from service.store.codec import unpack_profile, unpack_profile_json
from service.store.json_cache import RowJsonCache, page_json
from service.store.labels import JobLabelFilters
from service.store.models import JobRow, LayerProfileRow, LayerResultRow, layer_column

SORTABLE: dict[str, InstrumentedAttribute[Any]] = {
    f.name: layer_column(f.name) for f in SORTABLE_FIELDS
}


class LayerFilters:
    """The filters of the layer listings: the registry's filter parameters (``FILTER_PARAMS``:
    ``alpha_min=1.0``, ``kind=["conv"]``, ``flag="few_points"``, ...) and the job labels
    (``job_name``, ``tags``). Parameters left None do not filter."""

    def __init__(
        self, *, job_name: str | None = None, tags: list[str] | None = None, **values: Any
    ) -> None:
        unknown = set(values) - set(FILTER_PARAMS)
        if unknown:
            raise TypeError(f"no layer filter {', '.join(sorted(unknown))}")
        self.values = {name: value for name, value in values.items() if value is not None}
        self.labels = JobLabelFilters(name=job_name, tags=tags)

    def clauses(self) -> list[ColumnElement[bool]]:
        out = [_clause(FILTER_PARAMS[name], value) for name, value in self.values.items()]
        of_jobs = self.labels.job_clauses()
        if of_jobs:
            out.append(layer_column("job_id").in_(select(JobRow.id).where(*of_jobs)))
        return [clause for clause in out if clause is not None]


def _clause(param: FilterParam, value: Any) -> ColumnElement[bool] | None:
    column = layer_column(param.field.name)
    if param.op == "in":
        return column.in_(value) if value else None
    if param.op == "has":
        return column.like('%"' + str(value).replace('"', "") + '"%') if value else None
    if param.op == "ge":
        return column >= value
    if param.op == "le":
        return column <= value
    return column == value if value != "" else None


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """``alpha`` ascending, ``-alpha`` descending; nulls always last; ties by id."""
    sort = (sort or "id").strip()
    desc = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in SORTABLE:
        raise ValueError(f"cannot sort by {key!r}; one of: {', '.join(sorted(SORTABLE))}")
    return key, desc


BRIEF_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = tuple(
    layer_column(f.name) for f in BRIEF_FIELDS
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


class LayerPage(TypedDict, total=False):
    """Which page of a layer listing: ``sort`` (:func:`parse_sort`; default ``id``), the
    ``cursor`` of the page (default the first) and at most ``limit`` rows (default 100)."""

    sort: str | None
    cursor: str | None
    limit: int


def _keyset_page(
    session: Session, what: Select[Any], filters: LayerFilters, page: LayerPage
) -> tuple[list[Any], str | None]:
    """One page of ``what`` (rows or column tuples) in sort order, and the next cursor."""
    order = layer_order(page.get("sort"))
    stmt = what.where(*filters.clauses())
    return paging.page(session, stmt, order, page.get("cursor"), page.get("limit", 100))


def query_layers(
    session: Session, filters: LayerFilters, **page: Unpack[LayerPage]
) -> tuple[list[LayerRow], str | None]:
    """A page of full layer rows (every array of the stored profile)."""
    # the page is chosen on the indexed table alone; only its rows' profiles are read
    rows, next_cursor = _keyset_page(session, select(LayerResultRow), filters, page)
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


LAYER_KEY_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = (
    LayerResultRow.id,
    LayerResultRow.job_id,
    LayerResultRow.created_at,
)
LayerKey = tuple[LayerView, int, str, datetime]
"""A layer row's key in its ``RowJsonCache``: the view and ``LAYER_KEY_COLUMNS``."""


def _encoded_rows(session: Session, view: LayerView, ids: list[int]) -> Iterator[tuple[Any, bytes]]:
    """(key values, wire JSON) of the rows ``ids`` in ``view``: full rows from their columns
    and stored profiles, brief rows from their indexed columns alone."""
    if view == "full":
        for row, blob in session.execute(
            select(LayerResultRow, LayerProfileRow.blob)
            .join(LayerProfileRow, LayerProfileRow.layer_id == LayerResultRow.id)
            .where(LayerResultRow.id.in_(ids))
        ):
            fragment = layer_row(row, blob).model_dump_json().encode()
            yield (row.id, row.job_id, row.created_at), fragment
        return
    width = len(BRIEF_COLUMNS)
    for values in session.execute(
        select(*BRIEF_COLUMNS, *LAYER_KEY_COLUMNS).where(LayerResultRow.id.in_(ids))
    ):
        yield tuple(values[width:]), layer_brief(values[:width]).model_dump_json().encode()


def query_layer_page_json(
    session: Session,
    filters: LayerFilters,
    cache: RowJsonCache[LayerKey],
    view: LayerView = "full",
    **page: Unpack[LayerPage],
) -> bytes:
    """The page of :func:`query_layers` (``view="full"``) or :func:`query_layer_briefs`
    (``"brief"``) as the JSON of its ``Page``, byte for byte, built from each row's
    ``model_dump_json()``: from ``cache`` for the rows seen before; the others (their columns,
    and for full rows their stored profiles) are read, validated and encoded once, then
    cached. The page is chosen on the key columns only."""
    what = select(*LAYER_KEY_COLUMNS)
    rows, next_cursor = _keyset_page(session, what, filters, page)
    keys: list[LayerKey] = [(view, r[0], r[1], r[2]) for r in rows]
    fragments = cache.get_many(keys)
    missing = [key[1] for key in keys if key not in fragments]
    if missing:
        for key_values, fragment in _encoded_rows(session, view, missing):
            key = (view, *key_values)
            fragments[key] = fragment
            cache.put(key, fragment)
    return page_json((fragments[key] for key in keys), next_cursor)


def query_layer_briefs(
    session: Session, filters: LayerFilters, **page: Unpack[LayerPage]
) -> tuple[list[LayerBrief], str | None]:
    """A page of brief rows: indexed columns only, the stored profile is never read."""
    rows, next_cursor = _keyset_page(session, select(*BRIEF_COLUMNS), filters, page)
    return [layer_brief(row) for row in rows], next_cursor


def column_value(field: LayerField, stored: Any) -> Any:
    """A registry column's stored value as its field reads (flags are JSON text)."""
    if field.type == "flags":
        return json.loads(stored or "[]")
    return stored


def layer_brief(values: Sequence[Any]) -> LayerBrief:
    """A brief row from the values of ``BRIEF_COLUMNS``, in their order (the page's key
    columns may follow)."""
    return LayerBrief.model_construct(
        **{f.name: column_value(f, v) for f, v in zip(BRIEF_FIELDS, values, strict=False)}
    )


def _stored_fields(row: LayerResultRow) -> dict[str, Any]:
    """The StoredLayer fields of a row, from their registry columns."""
    return {
        f.name: getattr(row, f.column_name)
        for f in COLUMN_FIELDS
        if f.name in StoredLayer.model_fields
    }


def layer_row(row: LayerResultRow, blob: bytes) -> LayerRow:
    layer = LayerRow.model_validate_json(unpack_profile_json(blob, **_stored_fields(row)))
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
        provenance=provenance.from_columns(row),
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
    stmt = select(*(layer_column(name) for name in ("kind", "alpha", "gamma", "s")))
    if job_ids:
        stmt = stmt.where(LayerResultRow.job_id.in_(job_ids))
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
