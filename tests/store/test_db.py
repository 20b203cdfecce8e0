"""Engines and sessions (service/store/db.py): read sessions refuse writes, and on a
database server open no transaction; pooled connections are pinged only after an idle
spell, and one the database dropped meanwhile is replaced (SQLite, and PostgreSQL when
set)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, exc, func, insert, select, text, update
from sqlalchemy.orm import Session

from service.store import db
from service.store.models import JobRow
from tests.service.conftest import PG_URL, _pg_database


def _job(**values: Any) -> dict[str, Any]:
    return {
        "id": "j",
        "state": "queued",
        "spec_json": "{}",
        "checkpoint_id": "c",
        "dataset_ref": "d",
        **values,
    }


def _jobs(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(JobRow)) or 0


def test_read_sessions_refuse_writes_before_any_sql(engine: Engine) -> None:
    reads = db.make_read_session_factory(engine)
    with reads() as session:
        assert session.scalar(select(func.count()).select_from(JobRow)) == 0
        session.add(JobRow(**_job()))
        with pytest.raises(db.WriteInReadSession):
            session.flush()
    for statement in (insert(JobRow).values(**_job()), update(JobRow).values(state="done")):
        with reads() as session, pytest.raises(db.WriteInReadSession):
            session.execute(statement)
    assert _jobs(engine) == 0
    with db.make_session_factory(engine)() as session:  # a write session still writes
        session.add(JobRow(**_job()))
        session.commit()
    assert _jobs(engine) == 1


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


@pytest.fixture
def one_connection(pg_url: str) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database whose pool holds one connection."""
    engine = db.make_engine(pg_url, db.PoolSize(1, 0, 5.0))
    yield engine
    engine.dispose()


def _status(session: Session) -> TransactionStatus:
    dbapi = session.connection().connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection)
    return dbapi.info.transaction_status


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="CURVPROF_TEST_PG_URL not set")
def test_reads_on_a_database_server_open_no_transaction(
    pg_url: str, one_connection: Engine
) -> None:
    db.upgrade(pg_url)
    reads = db.make_read_session_factory(one_connection)
    writes = db.make_session_factory(one_connection)
    for _ in range(2):  # one pooled connection, alternately lent to each kind
        with reads() as session:
            session.execute(select(JobRow)).all()
            assert _status(session) == TransactionStatus.IDLE  # no BEGIN was sent
        with writes() as session:
            session.execute(select(JobRow)).all()
            assert _status(session) == TransactionStatus.INTRANS


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert isinstance(pid, int)
        return pid


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="CURVPROF_TEST_PG_URL not set")
def test_connections_are_pinged_only_after_an_idle_spell(
    one_connection: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = one_connection
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted_ping(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return ping(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    first = _backend_pid(engine)
    assert [_backend_pid(engine) for _ in range(20)] == [first] * 20
    assert pings == []  # each use came moments after the last
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    assert [_backend_pid(engine) for _ in range(3)] == [first] * 3
    assert len(pings) == 3
    with engine.connect() as conn:  # the ping left no transaction open
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, psycopg.Connection)
        assert dbapi.info.transaction_status == TransactionStatus.IDLE


def _terminate(pg_url: str, pid: int) -> None:
    admin = db.make_engine(pg_url)
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="CURVPROF_TEST_PG_URL not set")
def test_an_idle_connection_the_database_dropped_is_replaced(
    pg_url: str, one_connection: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = one_connection
    dropped = _backend_pid(engine)
    _terminate(pg_url, dropped)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # it has been idle long enough
    replacement = _backend_pid(engine)
    assert replacement != dropped

    # within the window there is no ping: the dropped connection fails its statement
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    _terminate(pg_url, replacement)
    with pytest.raises(exc.OperationalError):
        _backend_pid(engine)
    assert _backend_pid(engine) not in (dropped, replacement)  # the pool reconnected
