"""Jobs that have ended carry their listing's figures: layers done, planned and failed, and
the sum of their stored layers' wall seconds (``service/store/job_summary.py``).

A listing counted them from every layer row of every job on its page. They are filled here
for the jobs that have ended; the others stay null and are counted until they end.

Written 2026-12-02.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005_job_summary"
down_revision = "0004_layer_route_device"

ENDED = ("succeeded", "failed", "cancelled")
COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "summary_done": sa.Integer(),
    "summary_total": sa.Integer(),
    "summary_failed": sa.Integer(),
    "summary_compute_seconds": sa.Float(),
}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, type_ in COLUMNS.items():
            batch.add_column(sa.Column(name, type_, nullable=True))
    jobs = sa.table("jobs", sa.column("id"), sa.column("state"), *map(sa.column, COLUMNS))
    layers = sa.table("job_layers", sa.column("job_id"), sa.column("state"))
    results = sa.table("layer_results", sa.column("job_id"), sa.column("wall_seconds"))

    def layer_count(*where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        stmt = sa.select(sa.func.count()).where(layers.c.job_id == jobs.c.id, *where)
        return stmt.scalar_subquery()

    compute = sa.select(sa.func.coalesce(sa.func.sum(results.c.wall_seconds), 0.0))
    op.execute(
        jobs.update()
        .where(jobs.c.state.in_(ENDED))
        .values(
            summary_done=layer_count(layers.c.state == "succeeded"),
            summary_total=layer_count(),
            summary_failed=layer_count(layers.c.state == "failed"),
            summary_compute_seconds=compute.where(results.c.job_id == jobs.c.id).scalar_subquery(),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
