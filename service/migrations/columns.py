"""Column types and columns the revisions share.

Part of the migration history: every revision that uses one of these builds its schema from
it, so changing one rewrites the past. Add new ones; never edit one a revision uses.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column[int]:
    """The surrogate key of an append-mostly table: 64-bit, an INTEGER alias of the rowid on
    SQLite."""
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def job_id_column(*, primary_key: bool = False) -> sa.Column[str]:
    """A row's job: deleted with it."""
    foreign_key = sa.ForeignKey("jobs.id", ondelete="CASCADE")
    return sa.Column("job_id", sa.String(36), foreign_key, primary_key=primary_key, nullable=False)


def artifact_columns(*own: sa.Column[Any]) -> list[sa.Column[Any]]:
    """An uploaded artifact's columns (checkpoints, datasets): its id, hash and format, the
    table's ``own`` columns, then its file name, size, stored path and time."""
    return [
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("sha256", sa.String(64)),
        sa.Column("format", sa.String(16), nullable=False),
        *own,
        sa.Column("filename", sa.String(255)),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    ]


def create_job_table(name: str, *columns: Any) -> None:
    """A table of rows that belong to a job: an id, the job (indexed as ``ix_<name>_job_id``)
    and ``columns`` (constraints too)."""
    op.create_table(name, id_column(), job_id_column(), *columns)
    op.create_index(f"ix_{name}_job_id", name, ["job_id"])
