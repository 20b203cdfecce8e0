"""The layer field registry (api_schemas/layer_fields.py) against everything derived from it:
LayerProfile and StoredLayer, the ORM table and the migrated database, the sort keys, the
brief view, the filters (the query parameters of /v1/layers and the rows they select), the CSV
columns and the row written for a profile."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from api_schemas import JobSpec, LayerBrief, LayerProfile, Provenance
from api_schemas.layer_fields import (
    BRIEF_FIELDS,
    COLUMN_FIELDS,
    CSV_FIELDS,
    FIELDS,
    FILTER_PARAMS,
    LAYER_FIELDS,
    LayerField,
)
from api_schemas.layer_filters import LayerFilterQuery
from api_schemas.queries import StoredLayer
from service.routers.layers import CSV_COLUMNS, csv_cells
from service.store import db, queries, repo
from service.store import provenance as stored_provenance
from service.store.models import Base
from tests.service.helpers import fake_profile, store_layer

# the columns of layer_results that are neither registry fields nor Provenance fields
SETTINGS_COLUMNS = {"dtype", "top_k", "created_at"}
PYTHON_TYPES = {"int": int, "float": float, "text": str, "flags": list, "shape": tuple}


def _base_type(annotation: Any) -> Any:
    """``float | None`` -> float, ``Literal["a"]`` -> str, ``list[str]`` -> list."""
    if get_origin(annotation) in (types.UnionType, typing.Union):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    return get_origin(annotation) or annotation


def test_each_field_is_a_layer_profile_or_stored_layer_field_of_its_type() -> None:
    for f in LAYER_FIELDS:
        model = LayerProfile if f.source == "profile" else StoredLayer
        assert f.name in model.model_fields, f.name
        info = model.model_fields[f.name]
        assert _base_type(info.annotation) is PYTHON_TYPES[f.type], f.name
        may_be_none = type(None) in get_args(info.annotation)
        assert may_be_none == (f.nullable and f.type != "flags"), f.name
    stored_layer = {f.name for f in LAYER_FIELDS if f.source != "profile"}
    assert stored_layer == set(StoredLayer.model_fields)
    assert len(FIELDS) == len(LAYER_FIELDS)  # no name declared twice


def test_the_orm_table_and_the_migrated_database_hold_every_column(db_url: str) -> None:
    table = Base.metadata.tables["layer_results"]
    orm = {c.name: c.nullable for c in table.columns}
    registry = {f.column_name: f.nullable for f in COLUMN_FIELDS}
    provenance = {
        name: stored_provenance.column(name).column.nullable for name in stored_provenance.COLUMNS
    }
    assert registry.items() <= orm.items()
    assert provenance.items() <= orm.items()
    assert set(orm) == set(registry) | set(provenance) | SETTINGS_COLUMNS
    assert set(stored_provenance.COLUMNS) | {"node_id"} == set(Provenance.model_fields)
    db.upgrade(db_url)
    store = db.make_engine(db_url)
    try:
        migrated = {c["name"]: c["nullable"] for c in inspect(store).get_columns("layer_results")}
        indexes = {ix["name"] for ix in inspect(store).get_indexes("layer_results")}
    finally:
        store.dispose()
    assert migrated == orm  # every column, as nullable as the ORM declares it
    for f in COLUMN_FIELDS:
        if f.stored == "column":
            assert (f"ix_layer_results_{f.column_name}" in indexes) == f.indexed, f.name


def test_sort_keys_and_brief_view_are_the_registry_s() -> None:
    assert set(queries.SORTABLE) == {f.name for f in LAYER_FIELDS if f.sortable}
    assert set(LayerBrief.model_fields) == set(StoredLayer.model_fields) | {
        f.name for f in BRIEF_FIELDS
    }
    assert [c.key for c in queries.BRIEF_COLUMNS] == [f.column_name for f in BRIEF_FIELDS]
    assert tuple(f.name for f in CSV_FIELDS) == CSV_COLUMNS
    every_column = {f.name for f in COLUMN_FIELDS}
    assert every_column <= {f.name for f in CSV_FIELDS}  # the CSV lists every indexed field


def test_every_filter_is_a_query_parameter_of_the_listings() -> None:
    params = set(LayerFilterQuery.model_fields)
    assert params == set(FILTER_PARAMS) | {"job_name", "tag"}
    filtered = {p.field.name for p in FILTER_PARAMS.values()}
    assert filtered == {f.name for f in LAYER_FIELDS if f.filter is not None}
    assert {
        "job_id",
        "checkpoint_id",
        "arch",
        "kind",
        "node_id",
        "alpha_min",
        "alpha_max",
    } <= params
    assert {"gamma_min", "gamma_max", "s_min", "s_max", "r2_min", "flag", "step"} <= params
    assert {"step_min", "step_max", "route", "route_reason"} <= params


def _literal_values(annotation: Any) -> list[str]:
    """The values of a ``Literal`` annotation, optional or not, sorted; else []."""
    for part in (annotation, *get_args(annotation)):
        if get_origin(part) is Literal:
            return sorted(get_args(part))
    return []


def _value(field: LayerField, which: int) -> Any:
    """Two different values of a profile field; ``which=1`` is the larger."""
    choices = _literal_values(LayerProfile.model_fields[field.name].annotation)
    if choices:
        return choices[which]
    if field.type == "flags":
        return [f"flag_{which}"]
    if field.type == "text":
        return f"{field.name}-{which}"
    if field.type == "int":
        return 3 + which
    return 0.25 + which + len(field.name) / 100


def _stored_pair(session: Session) -> tuple[Any, Any]:
    """Two stored layers, of two jobs, that differ in every registry column."""
    rows = []
    for which in (0, 1):
        spec = JobSpec(checkpoint_id=f"zoo:c{which}", dataset="digits", step=10 + which)  # type: ignore[call-arg]
        job, _ = repo.create_job(session, spec, arch=f"arch{which}")
        values = {
            f.name: _value(f, which)
            for f in COLUMN_FIELDS
            if f.source == "profile" and f.name != "name"
        }
        profile = fake_profile(f"layer{which}", **values)
        assert store_layer(session, job, profile, node_id=f"node{which}")
        rows.append(job)
    briefs, _ = queries.query_layer_briefs(session, queries.LayerFilters(), sort="id")
    assert [b.job_id for b in briefs] == [job.id for job in rows]
    return briefs[0], briefs[1]


def test_each_column_is_written_read_and_filtered(session: Session) -> None:
    low, high = _stored_pair(session)
    for f in BRIEF_FIELDS:
        if f.source == "profile" and f.name != "name":
            assert getattr(low, f.name) == _value(f, 0), f.name
            assert getattr(high, f.name) == _value(f, 1), f.name
    assert (low.node_id, low.architecture, low.step) == ("node0", "arch0", 10)
    for name, param in FILTER_PARAMS.items():
        value = getattr(high if param.op != "le" else low, param.field.name)
        if param.op == "in":
            value = [value]
        elif param.op == "has":
            value = value[0]
        rows, _ = queries.query_layer_briefs(session, queries.LayerFilters(**{name: value}))
        expected = low if param.op == "le" else high
        assert [r.id for r in rows] == [expected.id], name
    full, _ = queries.query_layers(session, queries.LayerFilters(), sort="id")
    for row, brief in zip(full, (low, high), strict=True):
        cells = dict(zip(CSV_COLUMNS, csv_cells(row), strict=True))
        for f in BRIEF_FIELDS:
            expected = getattr(brief, f.name)
            if f.type == "flags":
                expected = ";".join(expected)
            assert cells[f.name] == ("" if expected is None else expected), f.name
        assert cells["shape"] == "4x4"


def test_a_layer_s_provenance_is_read_back_whole(session: Session) -> None:
    job, _ = repo.create_job(
        session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp"
    )
    provenance = Provenance(
        checkpoint_sha256="a" * 64,
        data_name="digits",
        data_sha256="b" * 64,
        data_seed=7,
        data_indices=[5, 1, 3],
        versions={"torch": "2.x", "curvprof": "0"},
        node_id="node-1",
        hostname="host-1",
        device="cuda:0 (NVIDIA H200)",
    )
    assert store_layer(session, job, fake_profile("l0"), **provenance.model_dump())
    (row,), _ = queries.query_layers(session, queries.LayerFilters(job_id=[job.id]))
    detail = queries.layer_detail(queries.get_layer(session, row.id))  # type: ignore[arg-type]
    assert detail.provenance == provenance
    assert detail.node_id == "node-1" and (detail.dtype, detail.top_k) == ("float64", 3)
