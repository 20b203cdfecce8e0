"""Jobs carry a name, tags and a training step; stored layers carry the step; jobs keep
their log lines (``job_logs``).

``jobs.name`` and ``jobs.step`` are copies of the spec's labels (``spec_json`` stays the
record of what was submitted), ``job_tags`` holds one row per tag, and ``layer_results.step``
lets a checkpoint series be read and sorted by step without a join. Jobs stored before this
revision have no labels: their columns stay null.

Written 2026-12-01.
"""

import sqlalchemy as sa
from alembic import op

from service.migrations.columns import create_job_table, job_id_column

revision = "0003_job_labels"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_name", "jobs", ["name"])
    op.create_index("ix_jobs_step", "jobs", ["step"])
    op.create_table(
        "job_tags",
        job_id_column(primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_job_tags_tag", "job_tags", ["tag"])
    with op.batch_alter_table("layer_results") as batch:
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
    op.create_index("ix_layer_results_step", "layer_results", ["step"])
    create_job_table(
        "job_logs",
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_job_logs_job_id", "job_logs")
    op.drop_table("job_logs")
    op.drop_index("ix_layer_results_step", "layer_results")
    with op.batch_alter_table("layer_results") as batch:
        batch.drop_column("step")
    op.drop_index("ix_job_tags_tag", "job_tags")
    op.drop_table("job_tags")
    op.drop_index("ix_jobs_step", "jobs")
    op.drop_index("ix_jobs_name", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("step")
        batch.drop_column("name")
