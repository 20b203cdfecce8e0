"""What the live-server campaigns share (bench.fuzz, bench.load): a fresh PostgreSQL
database on the server of ``CURVPROF_TEST_PG_URL``, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fresh_pg_database(server_url: str) -> Iterator[str]:
    """A new, empty database on ``server_url``'s server; its URL, dropped on exit."""
    import psycopg

    name = f"curvprof_bench_{uuid.uuid4().hex[:10]}"
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
