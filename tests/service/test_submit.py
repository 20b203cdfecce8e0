"""Submission through the store layer (service/store/submit.py) on a real server, SQLite and
PostgreSQL: a batch queues all its jobs in one transaction or none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from api_schemas import MeasurementSettings
from service.client import ApiError, CurvprofClient
from service.embedded import EmbeddedServer
from service.store import db
from service.store.models import JobRow
from tests.service.helpers import MLP_CONFIG, SPEC, write_checkpoint

ServerFactory = Callable[..., EmbeddedServer]


def refused(client: CurvprofClient, body: dict[str, object], key: str | None = None) -> int:
    with pytest.raises(ApiError) as err:
        client.batch(body, idempotency_key=key)
    return err.value.status


def test_a_batch_with_one_invalid_checkpoint_leaves_no_job(
    make_server: ServerFactory, db_url: str, tmp_path: Path
) -> None:
    with make_server(db_url=db_url).client() as client:
        stored = client.upload_checkpoint(write_checkpoint(tmp_path / "ckpt"), MLP_CONFIG)
        for bad in ("0" * 64, "zoo:nope"):
            body = {"checkpoint_ids": [stored.id, "zoo:mlp", bad], **SPEC}
            assert refused(client, body) == 422
        assert client.jobs().items == []
        batch = client.batch({"checkpoint_ids": [stored.id, "zoo:mlp"], **SPEC})
        assert [j.spec.checkpoint_id for j in batch.jobs] == [stored.id, "zoo:mlp"]


def test_a_batch_whose_second_insert_fails_is_rolled_back(
    make_server: ServerFactory, db_url: str
) -> None:
    """The batch's second job would take the key ``batch:K:1``, already held by a single
    job: the insert fails in the database, and the first job goes with it."""
    with make_server(db_url=db_url).client() as client:
        single = client.submit({"checkpoint_id": "zoo:vgg", **SPEC}, idempotency_key="batch:K:1")
        body = {"checkpoint_ids": ["zoo:mlp", "zoo:vgg"], **SPEC, "seed": 7}
        assert refused(client, body, key="K") == 409
        assert [j.id for j in client.jobs().items] == [single.id]


def test_a_retried_batch_must_match_the_first_job_for_job(
    make_server: ServerFactory, db_url: str
) -> None:
    with make_server(db_url=db_url).client() as client:
        body = {"checkpoint_ids": ["zoo:mlp", "zoo:vgg"], **SPEC}
        first = client.batch(body, idempotency_key="series")
        again = client.batch(body, idempotency_key="series")
        assert again.id == first.id and [j.id for j in again.jobs] == [j.id for j in first.jobs]
        longer = {**body, "checkpoint_ids": ["zoo:mlp", "zoo:vgg", "zoo:mlp"]}
        assert refused(client, longer, key="series") == 409
        assert refused(client, {**body, "top_k": 3}, key="series") == 409
        assert len(client.jobs(batch_id=first.id).items) == 2
        assert len(client.jobs().items) == 2


def test_a_repeat_matches_a_job_stored_before_settings_were_added(
    make_server: ServerFactory, db_url: str
) -> None:
    """A job stored without the settings added since (rank_cutoff, min_fit_points, mode),
    its fields in another order, is the same request as the repeat that now carries their
    defaults; a repeat with another value is not."""
    added = {"rank_cutoff", "min_fit_points", "mode"}
    assert added <= set(MeasurementSettings.model_fields)
    server = make_server(db_url=db_url)
    body = {"checkpoint_id": "zoo:mlp", **SPEC}
    with server.client() as client:
        job = client.submit(body, idempotency_key="old")
        engine = db.make_engine(server.settings.database_url)
        with db.make_session_factory(engine)() as session:
            row = session.get(JobRow, job.id)
            assert row is not None
            stored = json.loads(row.spec_json)
            row.spec_json = json.dumps(
                {k: v for k, v in reversed(stored.items()) if k not in added}
            )
            session.commit()
        engine.dispose()
        assert client.submit(body, idempotency_key="old").id == job.id
        with pytest.raises(ApiError) as err:
            client.submit({**body, "min_fit_points": 5}, idempotency_key="old")
        assert err.value.status == 409
