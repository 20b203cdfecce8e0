"""On PostgreSQL, an index per sortable layer column in the listings' descending order
(``col DESC NULLS LAST, id``), so that a descending sort walks an index instead of sorting
every matching row (``service/store/models.py``). SQLite needs none: it keeps nulls lowest,
and a backward walk of the column's own index is that order already.

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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.create_index(
            f"ix_layer_results_{column}_desc",
            "layer_results",
            [sa.text(f"{column} DESC NULLS LAST"), "id"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in reversed(COLUMNS):
        op.drop_index(f"ix_layer_results_{column}_desc", "layer_results")
