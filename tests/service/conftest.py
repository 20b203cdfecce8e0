"""Real parts only: a uvicorn server on loopback in a thread, SQLite files in tmp dirs,
PostgreSQL when CURVPROF_TEST_PG_URL is set (see tests/pg.sh); the session's one local Ray
is tests/conftest.py's ``ray_cluster``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.embedded import EmbeddedServer
from service.settings import Settings
from service.store import db

PG_URL = os.environ.get("CURVPROF_TEST_PG_URL")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., EmbeddedServer]]:
    servers: list[EmbeddedServer] = []

    def start(**overrides: Any) -> EmbeddedServer:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "run_jobs": False}
        values.update(overrides)
        server = EmbeddedServer(Settings(**values))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _pg_database() -> Iterator[str]:
    import psycopg

    assert PG_URL is not None
    name = f"curvprof_test_{uuid.uuid4().hex[:10]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(PG_URL is None, reason="CURVPROF_TEST_PG_URL not set"),
            ],
        ),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _pg_database()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` with the schema at the latest revision."""
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s
