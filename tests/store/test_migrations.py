"""The Alembic revisions (service/migrations) build exactly the schema the ORM models declare:
alembic's own autogenerate comparison, with column types, finds nothing to change on a
freshly migrated SQLite or PostgreSQL database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.store import db
from service.store.models import Base


def test_the_migrated_schema_is_the_orm_schema(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
