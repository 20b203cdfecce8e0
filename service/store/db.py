"""Engine and session factories, and the programmatic ``alembic upgrade head``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///") :])
    return None


@dataclass(frozen=True)
class PoolSize:
    """A connection pool: ``size`` kept open, up to ``overflow`` more, and how long a
    checkout waits when all are taken (then ``sqlalchemy.exc.TimeoutError``: a 503)."""

    size: int = 5
    overflow: int = 10
    timeout: float = 30.0


def make_engine(url: str, pool: PoolSize | None = None) -> Engine:
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if pool is not None and ":memory:" not in url:
        kwargs.update(pool_size=pool.size, max_overflow=pool.overflow, pool_timeout=pool.timeout)
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
    engine = create_engine(url, **kwargs)
    if not url.startswith("sqlite"):
        _ping_idle_connections(engine)
        return engine

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    return engine


PING_AFTER_IDLE_S = 1.0
"""A pooled connection idle longer than this is pinged before it is handed out."""


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection is alive before use, but only after ``PING_AFTER_IDLE_S``
    in the pool (HikariCP's rule). SQLAlchemy's ``pool_pre_ping`` pings at every checkout:
    on psycopg a BEGIN and a ``SELECT 1``, two round trips before each request's query,
    on connections a busy server used milliseconds before. A connection the database
    dropped since its last use is replaced (``DisconnectionError`` makes the pool
    reconnect); one that breaks within the window fails its statement, and SQLAlchemy then
    invalidates the pool, as it would without any ping."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at <= PING_AFTER_IDLE_S:
            return  # a new connection, or one in use moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()  # the ping's transaction, so none is open at checkout
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(str(error)) from error


def read_only_engine(engine: Engine) -> Engine:
    """``engine`` for requests that only read: on a database server its connections run
    in autocommit (the pool is shared). A read then costs its statements' round trips
    alone, with no BEGIN before them and no ROLLBACK after; each statement sees its own
    snapshot, as each already does in PostgreSQL's default READ COMMITTED transactions.
    SQLite's transactions are calls inside the process, so it keeps ``engine``."""
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


class WriteInReadSession(RuntimeError):
    """A write attempted in a session of ``make_read_session_factory``."""


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on :func:`read_only_engine`, which refuse to write: in autocommit a write
    would not be atomic, so one reaching a read session is a bug, raised before any SQL."""
    factory = sessionmaker(bind=read_only_engine(engine), expire_on_commit=False)

    @event.listens_for(factory, "before_flush")
    def _no_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
        raise WriteInReadSession("a read-only session was asked to flush changes")

    @event.listens_for(factory, "do_orm_execute")
    def _no_dml(state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            raise WriteInReadSession("a read-only session was asked to write")

    return factory


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run ``alembic upgrade head`` on ``url`` (creates the SQLite file if needed)."""
    path = _sqlite_path(normalize_url(url))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


STATISTICS_TABLES = ("jobs", "job_layers", "layer_results")


def refresh_statistics(engine: Engine) -> None:
    """``ANALYZE`` the filtered tables, so the planner knows their distributions.

    SQLite keeps no statistics until asked: without them it picks the filter's index and
    sorts every match (a filter on two kinds sorted by ``s``: 13,000 rows sorted for a
    page of 50, 70 ms at 10^5 layers) where the sort column's index stops after the page
    (9 ms). PostgreSQL samples (autovacuum does it too, but only some time after a bulk
    load). Run by the leader at start-up and again as the layer table grows
    (``store.statistics``); about 0.7 s per 10^5 layers on SQLite."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in STATISTICS_TABLES:
                conn.execute(text(f"ANALYZE {table}"))
        else:
            conn.execute(text(f"ANALYZE {', '.join(STATISTICS_TABLES)}"))


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
