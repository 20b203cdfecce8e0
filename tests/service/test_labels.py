"""Job names, tags and training steps: the 0003 migration, the store's filters, and the
REST filters on a real server (a checkpoint series submitted as one batch)."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import inspect, text

from api_schemas import BatchSpec, JobFilters, JobSpec
from service.client import ApiError
from service.store import db, queries, repo
from service.store.models import JobRow
from tests.service.helpers import SPEC, fake_profile, store_layer


def test_upgrade_from_0002_leaves_old_jobs_unlabelled_and_downgrades(db_url: str) -> None:
    db.upgrade(db_url, "0002")
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, state, spec_json, checkpoint_id, dataset_ref, runs,"
                " created_at) VALUES ('j1', 'succeeded', :spec, 'zoo:mlp', 'digits', 1, :now)"
            ),
            {
                "spec": '{"checkpoint_id": "zoo:mlp", "dataset": "digits"}',
                "now": datetime(2026, 1, 1),
            },
        )
    db.upgrade(db_url)
    inspector = inspect(engine)
    assert {"name", "step"} <= {c["name"] for c in inspector.get_columns("jobs")}
    assert "step" in {c["name"] for c in inspector.get_columns("layer_results")}
    assert "ix_job_tags_tag" in {ix["name"] for ix in inspector.get_indexes("job_tags")}
    with db.make_session_factory(engine)() as session:
        rows, _ = repo.list_jobs(session)
        old = repo.job_model(session, rows[0])
        assert (old.name, old.tags, old.step) == (None, [], None)
        rows, _ = repo.list_jobs(session, JobFilters(step_min=0))
        assert rows == []
    db.downgrade(db_url, "0002")
    assert "job_tags" not in inspect(engine).get_table_names()
    assert "step" not in {c["name"] for c in inspect(engine).get_columns("layer_results")}
    engine.dispose()


def test_labels_filter_jobs_and_layers_in_the_store(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    series = [(100, ["run-a", "lr=1e-3"]), (200, ["run-a"]), (300, ["run-a", "lr=1e-3"])]
    with db.make_session_factory(engine)() as session:
        for step, tags in series:
            spec = JobSpec(
                checkpoint_id="zoo:mlp", dataset="digits", name="gpt", tags=tags, step=step
            )
            row, _ = repo.create_job(session, spec, arch="mlp")
            store_layer(session, row, fake_profile("head", alpha=step / 100))
        repo.create_job(session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp")

        def steps(filters: JobFilters) -> list[int | None]:
            rows, _ = repo.list_jobs(session, filters)
            return sorted(r.step for r in rows if r.step is not None)

        assert steps(JobFilters(name="gpt")) == [100, 200, 300]
        assert steps(JobFilters(tag="run-a,lr=1e-3")) == [100, 300]
        assert steps(JobFilters(step=200)) == [200]
        assert steps(JobFilters(step_min=150, step_max=300)) == [200, 300]
        assert steps(JobFilters(name="other")) == []

        def layer_steps(**kw: object) -> list[tuple[int | None, float | None]]:
            filters = queries.LayerFilters(**kw)  # type: ignore[arg-type]
            briefs, _ = queries.query_layer_briefs(session, filters, sort="-step")
            full, _ = queries.query_layers(session, filters, sort="-step")
            assert [(b.step, b.alpha) for b in briefs] == [(r.step, r.alpha) for r in full]
            return [(b.step, b.alpha) for b in briefs]

        assert layer_steps() == [(300, 3.0), (200, 2.0), (100, 1.0)]
        assert layer_steps(tags=["lr=1e-3"]) == [(300, 3.0), (100, 1.0)]
        assert layer_steps(job_name="gpt", step_max=200) == [(200, 2.0), (100, 1.0)]
        assert layer_steps(job_name="nope") == []
    engine.dispose()


def test_label_validation() -> None:
    base = {"checkpoint_id": "zoo:mlp", "dataset": "digits"}
    assert JobSpec(**base, tags=["a", " b ", "a"]).tags == ["a", "b"]  # type: ignore[arg-type]
    for bad in ({"tags": ["a,b"]}, {"tags": [""]}, {"step": -1}, {"name": "x" * 201}):
        with pytest.raises(ValueError):
            JobSpec(**base, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps has 1 entries for 2"):
        BatchSpec(checkpoint_ids=["a", "b"], steps=[1], dataset="digits")


def test_series_batch_and_label_filters_over_rest(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    with server.client() as client:
        batch = client.batch(
            {
                "checkpoint_ids": ["zoo:mlp", "zoo:mlp", "zoo:mlp"],
                "steps": [0, 500, 1000],
                "name": "mlp-run",
                "tags": ["sweep", "seed0"],
                **SPEC,
            }
        )
        assert [(j.name, j.step, j.tags) for j in batch.jobs] == [
            ("mlp-run", s, ["sweep", "seed0"]) for s in (0, 500, 1000)
        ]
        single = client.submit({"checkpoint_id": "zoo:mlp", "step": 7, "tags": ["seed0"], **SPEC})
        raw = client.request("GET", f"/v1/jobs/{single.id}").json()
        assert (raw["name"], raw["tags"], raw["step"]) == (None, ["seed0"], 7)
        assert {j.step for j in client.iter_jobs(page_size=1, name="mlp-run")} == {0, 500, 1000}
        listed = {j.id for j in client.iter_jobs(tag=["seed0"], step_min=1, step_max=999)}
        assert listed == {batch.jobs[1].id, single.id}
        assert {j.id for j in client.iter_jobs(tag="sweep,seed0", step=1000)} == {batch.jobs[2].id}
        assert client.jobs(tag="nosuchtag").items == []
        engine = db.make_engine(server.settings.database_url)
        with db.make_session_factory(engine)() as session:
            for job in batch.jobs:
                stored = session.get(JobRow, job.id)
                assert stored is not None
                profile = fake_profile("head", alpha=1.0 + (job.step or 0) / 1000)
                store_layer(session, stored, profile)
        engine.dispose()
        page = client.layers_page(job_name="mlp-run", step=500)
        assert [(r.step, r.alpha, r.job_id) for r in page.items] == [(500, 1.5, batch.jobs[1].id)]
        briefs = list(client.layer_briefs(tag=["sweep"], sort="-step"))
        assert [(b.step, b.alpha) for b in briefs] == [(1000, 2.0), (500, 1.5), (0, 1.0)]
        assert list(client.layer_briefs(tag="seed0,nosuchtag")) == []
        frame = client.layers_df(job_name="mlp-run", sort="step")
        assert list(frame["step"]) == [0, 500, 1000] and list(frame["alpha"]) == [1.0, 1.5, 2.0]
        assert list(frame["job_id"]) == [j.id for j in batch.jobs]
        assert list(frame["name"]) == ["head"] * 3 and "sigma" not in frame.columns
        assert list(client.layers_df(step=1000, arrays=True)["sigma"].iloc[0]) == [3.0, 2.0, 1.0]
        csv_lines = client.export_csv(job_name="mlp-run", sort="step").splitlines()
        assert csv_lines[0].endswith(",step") and [x.rsplit(",", 1)[1] for x in csv_lines[1:]] == [
            "0",
            "500",
            "1000",
        ]
        for bad in ({"steps": [1, 2]}, {"steps": [0, 1, -5]}, {"tags": ["a,b"]}):
            with pytest.raises(ApiError) as err:
                client.batch({"checkpoint_ids": ["zoo:mlp"] * 3, **SPEC, **bad})
            assert err.value.status == 422
        r = client.http.get("/v1/jobs", params={"step": "x"})
        assert r.status_code == 422
