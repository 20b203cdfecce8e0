"""The store on SQLite and PostgreSQL: migrations, idempotent writes, queries."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from sqlalchemy import Connection, func, inspect, select, text

from api_schemas import JobSpec, LayerRow
from service.store import db, queries, repo
from service.store.codec import pack_profile
from service.store.models import JobRow, LayerResultRow
from service.store.paging import CursorError
from tests.service.helpers import fake_profile, store_layer

TABLES = {"checkpoints", "datasets", "jobs", "job_layers", "layer_results"}


def _spec(**kw: object) -> JobSpec:
    return JobSpec(checkpoint_id="zoo:mlp", dataset="digits", **kw)  # type: ignore[arg-type]


def _insert_old_job(conn: Connection) -> None:
    """Job ``j1``, as a revision before this one stored it."""
    conn.execute(
        text(
            "INSERT INTO jobs (id, state, spec_json, checkpoint_id, dataset_ref, runs,"
            " created_at) VALUES ('j1', 'succeeded', '{}', 'c1', 'digits', 1, :now)"
        ),
        {"now": datetime(2026, 1, 1)},
    )


def test_migrations_up_down_up(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("layer_results")}
    assert {"ix_layer_results_alpha", "ix_layer_results_gamma", "ix_layer_results_s"} <= indexes
    db.downgrade(db_url)
    assert not TABLES & set(inspect(engine).get_table_names())
    db.upgrade(db_url)
    db.upgrade(db_url)  # idempotent
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_upgrade_from_0001_keeps_stored_profiles(db_url: str) -> None:
    db.upgrade(db_url, "0001")
    engine = db.make_engine(db_url)
    blob = pack_profile(fake_profile("l0", "conv", alpha=1.25, sigma=[4.0, 2.0, 1.0]))
    with engine.begin() as conn:
        _insert_old_job(conn)
        conn.execute(
            text(
                "INSERT INTO layer_results (job_id, layer_name, kind, alpha, flags, k, data_seed,"
                " data_indices, dtype, top_k, versions, profile_blob, created_at) VALUES"
                " ('j1', 'l0', 'conv', 1.25, '[]', 3, 0, '[]', 'float64', 3, '{}', :blob, :now)"
            ),
            {"blob": blob, "now": datetime(2026, 1, 1)},
        )
    db.upgrade(db_url)
    columns = {c["name"] for c in inspect(engine).get_columns("layer_results")}
    assert "profile_blob" not in columns
    with db.make_session_factory(engine)() as session:
        rows, _ = queries.query_layers(session, queries.LayerFilters(kind=["conv"]))
        assert [(r.name, r.alpha, r.sigma) for r in rows] == [("l0", 1.25, [4.0, 2.0, 1.0])]
    db.downgrade(db_url, "0001")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT profile_blob FROM layer_results")).scalar() == blob
    engine.dispose()


def test_upgrade_to_0004_fills_routes_from_stored_profiles(db_url: str) -> None:
    db.upgrade(db_url, "0003_job_labels")
    engine = db.make_engine(db_url)
    profiles = {
        "l0": fake_profile("l0", route="output_double_backward", route_reason="gelu above"),
        "l1": fake_profile("l1"),  # stored before routes were recorded
    }
    with engine.begin() as conn:
        _insert_old_job(conn)
        for layer_id, (name, profile) in enumerate(profiles.items(), start=1):
            conn.execute(
                text(
                    "INSERT INTO layer_results (id, job_id, layer_name, kind, flags, k, data_seed,"
                    " data_indices, dtype, top_k, versions, created_at) VALUES (:id, 'j1', :name,"
                    " 'linear', '[]', 3, 0, '[]', 'float64', 3, '{}', :now)"
                ),
                {"id": layer_id, "name": name, "now": datetime(2026, 1, 1)},
            )
            conn.execute(
                text("INSERT INTO layer_profiles (layer_id, blob) VALUES (:id, :blob)"),
                {"id": layer_id, "blob": pack_profile(profile)},
            )
    db.upgrade(db_url)
    with db.make_session_factory(engine)() as session:
        briefs, _ = queries.query_layer_briefs(session, queries.LayerFilters(), sort="name")
        assert [(b.route, b.route_reason) for b in briefs] == [
            ("output_double_backward", "gelu above"),
            (None, None),
        ]
        rows, _ = queries.query_layers(
            session, queries.LayerFilters(route=["output_double_backward"])
        )
        assert [r.name for r in rows] == ["l0"]
        detail = queries.layer_detail(queries.get_layer(session, rows[0].id))  # type: ignore[arg-type]
        assert (detail.provenance.device, detail.provenance.data_name) == (None, None)
    db.downgrade(db_url, "0003_job_labels")
    columns = {c["name"] for c in inspect(engine).get_columns("layer_results")}
    assert not {"route", "route_reason", "device", "data_name"} & columns
    engine.dispose()


def test_idempotency_key_returns_same_job(session) -> None:  # type: ignore[no-untyped-def]
    a, created_a = repo.create_job(session, _spec(), arch="mlp", idempotency_key="k1")
    b, created_b = repo.create_job(session, _spec(), arch="mlp", idempotency_key="k1")
    c, _ = repo.create_job(session, _spec(), arch="mlp")
    assert created_a and not created_b and a.id == b.id != c.id
    with pytest.raises(repo.Conflict):
        repo.create_job(session, _spec(seed=5), arch="mlp", idempotency_key="k1")
    assert session.scalar(select(func.count()).select_from(JobRow)) == 2


def test_layer_result_is_unique_per_job_and_layer(session) -> None:  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(session, _spec(), arch="mlp")
    repo.ensure_job_layers(session, job.id, ["a", "b"])
    meta = {"node_id": "n1", "data_indices": [1, 2, 3], "versions": {"torch": "x"}}
    assert store_layer(session, job, fake_profile("a", alpha=1.5), **meta)
    assert not store_layer(session, job, fake_profile("a", alpha=9.0), **meta)
    count = session.scalar(select(func.count()).select_from(LayerResultRow))
    assert count == 1
    model = repo.job_model(session, job)
    assert (model.progress.done, model.progress.total) == (1, 2)
    rows, _ = queries.query_layers(session, queries.LayerFilters(job_id=[job.id]))
    assert rows[0].alpha == 1.5 and rows[0].node_id == "n1"
    detail = queries.layer_detail(queries.get_layer(session, rows[0].id))  # type: ignore[arg-type]
    assert detail.provenance.data_indices == [1, 2, 3] and detail.sigma == [3.0, 2.0, 1.0]


def test_filters_sorting_and_keyset_pages(session) -> None:  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(session, _spec(), arch="mlp")
    alphas = [0.5, 1.0, 1.0, 2.0, None, 1.5, None, 3.0]
    for i, alpha in enumerate(alphas):
        kind = "conv" if i % 2 else "linear"
        flags = ["few_points"] if alpha is None else []
        profile = fake_profile(f"l{i}", kind, alpha=alpha, gamma=0.1 * i, r2_alpha=0.9, flags=flags)
        store_layer(session, job, profile)
    for sort in ("alpha", "-alpha", "gamma", "id", "-id", "name"):
        seen, cursor = [], None
        while True:
            rows, cursor = queries.query_layers(
                session, queries.LayerFilters(), sort=sort, cursor=cursor, limit=3
            )
            seen.extend(rows)
            if cursor is None:
                break
        assert len(seen) == len(alphas) and len({r.id for r in seen}) == len(alphas)
        if sort in ("alpha", "-alpha"):
            values = [r.alpha for r in seen]
            defined = [v for v in values if v is not None]
            assert values[len(defined) :] == [None, None]  # nulls last
            assert defined == sorted(defined, reverse=sort.startswith("-"))
    rows, _ = queries.query_layers(session, queries.LayerFilters(alpha_min=1.0, alpha_max=2.0))
    assert sorted(r.alpha for r in rows if r.alpha is not None) == [1.0, 1.0, 1.5, 2.0]
    rows, _ = queries.query_layers(session, queries.LayerFilters(kind=["conv"]))
    assert {r.kind for r in rows} == {"conv"} and len(rows) == 4
    rows, _ = queries.query_layers(session, queries.LayerFilters(flag="few_points"))
    assert len(rows) == 2
    with pytest.raises(CursorError):
        queries.query_layers(session, queries.LayerFilters(), cursor="garbage!")
    _, cursor = queries.query_layers(session, queries.LayerFilters(), sort="alpha", limit=2)
    with pytest.raises(CursorError):
        queries.query_layers(session, queries.LayerFilters(), sort="gamma", cursor=cursor)


def test_summary_by_kind(session) -> None:  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(session, _spec(), arch="mlp")
    other, _ = repo.create_job(session, _spec(), arch="mlp")
    for i, alpha in enumerate([1.0, 2.0, 3.0]):
        store_layer(session, job, fake_profile(f"a{i}", alpha=alpha))
    store_layer(session, other, fake_profile("x", alpha=100.0))
    (row,) = queries.summary(session, [job.id])
    assert row.kind == "linear" and row.n == 3 and row.alpha_n == 3
    assert row.alpha_mean == pytest.approx(2.0) and row.alpha_sd == pytest.approx(1.0)
    assert row.gamma_mean is None and row.gamma_n == 0
    both = queries.summary(session, [job.id, other.id])
    assert both[0].n == 4 and not math.isclose(both[0].alpha_mean or 0, 2.0)


def test_brief_rows_page_like_full_rows(session) -> None:  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(session, _spec(), arch="mlp")
    alphas = [0.5, 1.0, 1.0, None, 1.5, 3.0, None]
    for i, alpha in enumerate(alphas):
        flags = ["few_points"] if alpha is None else []
        profile = fake_profile(f"l{i}", "conv", alpha=alpha, gamma=0.2 * i, flags=flags)
        store_layer(session, job, profile, node_id=f"n{i % 2}")
    for sort in ("alpha", "-alpha", "-gamma", "-id", "name", "wall_seconds"):
        full, briefs, cursors = [], [], [None, None]
        while True:
            rows, cursors[0] = queries.query_layers(
                session, queries.LayerFilters(), sort=sort, cursor=cursors[0], limit=2
            )
            page, cursors[1] = queries.query_layer_briefs(
                session, queries.LayerFilters(), sort=sort, cursor=cursors[1], limit=2
            )
            assert cursors[0] == cursors[1]
            full.extend(rows)
            briefs.extend(page)
            if cursors[0] is None:
                break
        assert [b.id for b in briefs] == [r.id for r in full]
        for b, r in zip(briefs, full, strict=True):
            dumped = b.model_dump()
            expected = {key: getattr(r, key) for key in dumped if key != "architecture"}
            assert {k: v for k, v in dumped.items() if k != "architecture"} == expected
            assert b.architecture == r.architecture == "mlp"
    page, _ = queries.query_layer_briefs(session, queries.LayerFilters(flag="few_points"))
    assert [b.flags for b in page] == [["few_points"], ["few_points"]]


def test_rows_stored_with_nan_bic_are_served_as_valid_json(session) -> None:  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(session, _spec(), arch="mlp")
    profile = fake_profile("l0", bic={"power_law": math.nan, "exponential": -3.5})
    store_layer(session, job, profile)
    rows, _ = queries.query_layers(session, queries.LayerFilters(job_id=[job.id]))
    again = LayerRow.model_validate_json(rows[0].model_dump_json())
    assert again.bic == {"exponential": -3.5}
