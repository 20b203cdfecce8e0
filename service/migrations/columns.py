"""Column types and columns the revisions share.

Part of the migration history: every revision that uses one of these builds its schema from
it, so changing one rewrites the past. Add new ones; never edit one a revision uses.
"""

import sqlalchemy as sa

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column[int]:
    """The surrogate key of an append-mostly table: 64-bit, an INTEGER alias of the rowid on
    SQLite."""
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def job_id_column(*, primary_key: bool = False) -> sa.Column[str]:
    """A row's job: deleted with it."""
    foreign_key = sa.ForeignKey("jobs.id", ondelete="CASCADE")
    return sa.Column("job_id", sa.String(36), foreign_key, primary_key=primary_key, nullable=False)
