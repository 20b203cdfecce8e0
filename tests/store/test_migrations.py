"""The Alembic revisions (service/migrations) build exactly the schema the ORM models declare:
alembic's own autogenerate comparison, with column types, finds nothing to change on a
freshly migrated SQLite or PostgreSQL database, and the PostgreSQL-only indexes exist there
alone."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.store import db
from service.store.models import (
    DESCENDING_SORT_COLUMNS,
    POSTGRESQL_ONLY_INDEXES,
    Base,
    on_this_dialect,
)


def test_the_migrated_schema_is_the_orm_schema(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            include = on_this_dialect(conn.dialect.name)
            opts = {"compare_type": True, "include_object": include}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_the_descending_order_indexes_are_on_postgresql_alone(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        found = {
            (table, ix["name"])
            for table in ("layer_results", "jobs", "checkpoints", "datasets")
            for ix in inspect(engine).get_indexes(table)
        }
        wanted = {
            (ix.table.name, ix.name) for ix in POSTGRESQL_ONLY_INDEXES if ix.table is not None
        }
        assert len(wanted) == len(DESCENDING_SORT_COLUMNS) + 3
        if engine.dialect.name == "postgresql":
            assert wanted <= found
        else:
            assert not wanted & found
    finally:
        engine.dispose()
