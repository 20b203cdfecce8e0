"""Planner statistics refreshed as the layer table grows (service/store/statistics.py), on
SQLite and PostgreSQL: read back from the database's own statistics (SQLite's
``sqlite_stat1``, PostgreSQL's ``pg_class.reltuples``), not from the refresher's counters."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from api_schemas import JobSpec
from service.store import db, repo
from service.store.statistics import StatisticsRefresher
from tests.service.helpers import fake_profile, store_layer


def _analyzed_rows(engine: Engine) -> int | None:
    """The row count of layer_results as the planner's statistics have it."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            exists = conn.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE name='sqlite_stat1'")
            )
            if not exists:
                return None
            stat = conn.scalar(
                text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'layer_results' LIMIT 1")
            )
            return int(stat.split()[0]) if stat else 0
        reltuples = conn.scalar(
            text("SELECT reltuples FROM pg_class WHERE relname = 'layer_results'")
        )
        return int(reltuples) if reltuples is not None and reltuples >= 0 else None


def _store(engine: Engine, first: int, n: int) -> None:
    with db.make_session_factory(engine)() as session:
        job, _ = repo.create_job(
            session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits", seed=first), arch="mlp"
        )
        for i in range(first, first + n):
            store_layer(session, job, fake_profile(f"l{i}"))


def test_statistics_are_refreshed_after_enough_new_rows(engine: Engine) -> None:
    refresher = StatisticsRefresher(engine, every_rows=40, min_rows=10)
    _store(engine, 0, 12)
    refresher.refresh()  # as at start-up
    assert refresher.analyzed_rows == 12 and _analyzed_rows(engine) == 12
    _store(engine, 12, 11)  # 23 rows: less than a doubling of 12
    assert not refresher.check() and _analyzed_rows(engine) == 12
    _store(engine, 23, 1)  # 24: doubled
    assert refresher.check() and _analyzed_rows(engine) == 24
    _store(engine, 24, 39)  # 63: +39, a doubling of 24 (min(40, 24) = 24)
    assert refresher.check() and _analyzed_rows(engine) == 63
    _store(engine, 63, 39)  # 102: +39 < min(40, 63) = 40
    assert not refresher.check() and _analyzed_rows(engine) == 63
    _store(engine, 102, 1)  # +40: every_rows
    assert refresher.check() and _analyzed_rows(engine) == 103


def test_the_polling_thread_refreshes_off_the_request_path(engine: Engine) -> None:
    refresher = StatisticsRefresher(engine, every_rows=10_000, min_rows=5, poll_s=0.1)
    refresher.refresh()
    assert _analyzed_rows(engine) in (0, None)  # an empty table
    refresher.start()
    try:
        _store(engine, 0, 6)
        deadline = time.monotonic() + 20
        while _analyzed_rows(engine) != 6:
            assert time.monotonic() < deadline, _analyzed_rows(engine)
            time.sleep(0.1)
        assert refresher.refreshes == 2
    finally:
        refresher.stop()
