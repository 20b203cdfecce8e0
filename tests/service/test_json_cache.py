"""Pages from the per-process row JSON cache (service/store/json_cache.py): layer pages are
the same bytes as ``Page[LayerRow].model_dump_json()`` (full) and ``Page[LayerBrief]``'s
(brief) cold, warm and under eviction, on SQLite and PostgreSQL; the bound in bytes; a row id
handed out again never serves old bytes. Job pages are ``Page[Job]``'s bytes and follow every
change of a job (service/store/job_pages.py)."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import delete

from api_schemas import Job, JobFilters, JobSpec, LayerBrief, LayerRow, Page
from service.store import job_pages, queries, repo
from service.store.json_cache import RowJsonCache
from service.store.models import LayerResultRow
from tests.service.helpers import fake_profile, store_layer


def _job(session):  # type: ignore[no-untyped-def]
    job, _ = repo.create_job(
        session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp"
    )
    return job


def _expected(session, filters, view="full", **kw) -> bytes:  # type: ignore[no-untyped-def]
    if view == "brief":
        briefs, cursor = queries.query_layer_briefs(session, filters, **kw)
        return Page[LayerBrief](items=briefs, next_cursor=cursor).model_dump_json().encode()
    rows, cursor = queries.query_layers(session, filters, **kw)
    return Page[LayerRow](items=rows, next_cursor=cursor).model_dump_json().encode()


@pytest.mark.parametrize("view", ["full", "brief"])
@pytest.mark.parametrize("max_bytes", [0, 3000, 64 * 1024**2])
def test_pages_are_the_models_json_byte_for_byte(session, max_bytes: int, view: str) -> None:  # type: ignore[no-untyped-def]
    job = _job(session)
    for i, alpha in enumerate([0.5, 1.0, None, 2.0, 1.5, None, 3.0, 0.25]):
        flags = ["few_points"] if alpha is None else []
        profile = fake_profile(
            f"l{i}", "conv" if i % 2 else "linear", alpha=alpha, gamma=0.1 * i, flags=flags
        )
        store_layer(session, job, profile, node_id=f"n{i % 3}", data_indices=[i])
    cache = RowJsonCache(max_bytes)
    pages = 0
    for _ in range(2):  # cold, then from the cache (where it keeps anything)
        for sort in ("alpha", "-alpha", "id", "-id", "name"):
            for filters in (queries.LayerFilters(), queries.LayerFilters(kind=["conv"])):
                cursor = None
                while True:
                    got = queries.query_layer_page_json(
                        session, filters, cache, view, sort=sort, cursor=cursor, limit=3
                    )
                    expected = _expected(session, filters, view, sort=sort, cursor=cursor, limit=3)
                    assert got == expected
                    cursor = json.loads(got)["next_cursor"]
                    pages += 1
                    if cursor is None:
                        break
    assert pages == 2 * 5 * (3 + 2)
    assert cache.bytes <= max_bytes
    if max_bytes == 0:
        assert len(cache) == 0 and cache.hits == 0
    elif max_bytes > 10**6:
        assert len(cache) == 8 and cache.hits > cache.misses


def test_a_stored_nan_bic_is_dropped_as_in_the_model(session) -> None:  # type: ignore[no-untyped-def]
    job = _job(session)
    store_layer(session, job, fake_profile("l0", bic={"a": 1.5, "b": math.nan}))
    cache = RowJsonCache(1 << 20)
    for _ in range(2):
        got = queries.query_layer_page_json(session, queries.LayerFilters(), cache)
        assert got == _expected(session, queries.LayerFilters())
        assert Page[LayerRow].model_validate_json(got).items[0].bic == {"a": 1.5}


def test_the_cache_drops_the_least_recently_used_rows_within_its_bytes() -> None:
    cache = RowJsonCache(10)
    keys = [("full", i, "job", None) for i in range(4)]
    cache.put(keys[0], b"aaaa")  # type: ignore[arg-type]
    cache.put(keys[1], b"bbbb")  # type: ignore[arg-type]
    assert cache.get_many([keys[0]]) == {keys[0]: b"aaaa"}  # type: ignore[dict-item]
    cache.put(keys[2], b"cccc")  # type: ignore[arg-type]  # 12 bytes: drops keys[1]
    assert set(cache.get_many(keys)) == {keys[0], keys[2]}  # type: ignore[arg-type]
    assert cache.bytes == 8
    cache.put(keys[3], b"x" * 11)  # type: ignore[arg-type]  # over the bound alone: not kept
    assert len(cache) == 2 and cache.bytes == 8


def test_a_row_id_handed_out_again_is_not_served_from_the_cache(session) -> None:  # type: ignore[no-untyped-def]
    job = _job(session)
    store_layer(session, job, fake_profile("old", alpha=1.0))
    cache = RowJsonCache(1 << 20)
    first = queries.query_layer_page_json(session, queries.LayerFilters(), cache)
    old_id = Page[LayerRow].model_validate_json(first).items[0].id
    session.execute(delete(LayerResultRow))  # by hand: the service itself never deletes rows
    session.commit()
    other = _job(session)
    store_layer(session, other, fake_profile("new", alpha=2.0))
    got = queries.query_layer_page_json(session, queries.LayerFilters(), cache)
    assert got == _expected(session, queries.LayerFilters())
    items = Page[LayerRow].model_validate_json(got).items
    assert [r.name for r in items] == ["new"]
    if session.bind.dialect.name == "sqlite":
        assert items[0].id == old_id  # SQLite did hand the id out again


def test_one_cache_keeps_the_views_of_a_row_apart(session) -> None:  # type: ignore[no-untyped-def]
    job = _job(session)
    for i in range(3):
        store_layer(session, job, fake_profile(f"l{i}", alpha=0.5 * i))
    cache = RowJsonCache(1 << 20)
    for view in ("full", "brief", "full", "brief"):
        got = queries.query_layer_page_json(session, queries.LayerFilters(), cache, view)
        assert got == _expected(session, queries.LayerFilters(), view)
    assert len(cache) == 6 and cache.hits == 6


def _expected_jobs(session, rows, cursor) -> bytes:  # type: ignore[no-untyped-def]
    page = Page[Job](items=repo.job_summaries(session, rows), next_cursor=cursor)
    return page.model_dump_json().encode()


def _job_page(session, cache, limit=2, cursor=None):  # type: ignore[no-untyped-def]
    rows, next_cursor = repo.list_jobs(session, cursor=cursor, limit=limit)
    got = job_pages.job_page_json(session, JobFilters(), cache, cursor=cursor, limit=limit)
    return got, _expected_jobs(session, rows, next_cursor), next_cursor


@pytest.mark.parametrize("max_bytes", [0, 2500, 8 * 1024**2])
def test_job_pages_are_the_models_json_and_follow_every_change(session, max_bytes: int) -> None:  # type: ignore[no-untyped-def]
    jobs = [_job(session) for _ in range(5)]
    repo.ensure_job_layers(session, jobs[0].id, ["a", "b"])
    cache: RowJsonCache[job_pages.JobKey] = RowJsonCache(max_bytes)

    def every_page() -> list[bytes]:
        pages, cursor = [], None
        while True:
            got, expected, cursor = _job_page(session, cache, cursor=cursor)
            assert got == expected
            pages.append(got)
            if cursor is None:
                return pages

    first = every_page()
    assert every_page() == first  # warm, where it keeps anything
    # each kind of change a job goes through: the listing shows it at once
    repo.set_job_state(session, jobs[0].id, "running")
    store_layer(session, jobs[0], fake_profile("a", alpha=1.0))
    repo.set_layers_state(session, jobs[0].id, ["b"], "failed", error="boom")
    repo.set_job_state(session, jobs[0].id, "failed", error="one layer failed")
    repo.set_job_state(session, jobs[1].id, "cancelled")
    after = every_page()
    assert after != first
    listed = {job.id: job for p in after for job in Page[Job].model_validate_json(p).items}
    assert listed[jobs[0].id].state == "failed"
    assert listed[jobs[0].id].error == "one layer failed"
    assert (listed[jobs[0].id].progress.done, listed[jobs[0].id].progress.failed) == (1, 1)
    assert listed[jobs[1].id].state == "cancelled"
    assert cache.bytes <= max_bytes
    if max_bytes == 0:
        assert len(cache) == 0 and cache.hits == 0
    elif max_bytes > 10**6:
        assert cache.hits >= 5  # the second round of pages, every job unchanged
