"""On PostgreSQL, indexes in the listings' descending orders, so that a descending sort walks
an index instead of sorting every matching row (``service/store/models.py``): one per
sortable layer column (``col DESC NULLS LAST, id``) and one per newest-first listing (jobs,
checkpoints, datasets: ``created_at DESC NULLS LAST, id DESC``). SQLite needs none: it keeps
nulls lowest, and a backward walk of the column's own index is that order already.

Written 2026-12-02.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_descending_sort_indexes"
down_revision = "0005_job_summary"

COLUMNS = (
    "kind",
    "alpha",
    "r2_alpha",
    "gamma",
    "r2_gamma",
    "s",
    "s_eig",
    "predicted_s",
    "triangle_relative_error",
    "pr_h",
    "route",
    "wall_seconds",
    "step",
)


NEWEST_FIRST = ("checkpoints", "datasets", "jobs")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.create_index(
            f"ix_layer_results_{column}_desc",
            "layer_results",
            [sa.text(f"{column} DESC NULLS LAST"), "id"],
        )
    for table in NEWEST_FIRST:
        op.create_index(
            f"ix_{table}_newest_first",
            table,
            [sa.text("created_at DESC NULLS LAST"), sa.text("id DESC")],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in reversed(NEWEST_FIRST):
        op.drop_index(f"ix_{table}_newest_first", table)
    for column in reversed(COLUMNS):
        op.drop_index(f"ix_layer_results_{column}_desc", "layer_results")
