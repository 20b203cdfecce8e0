"""Initial schema: checkpoints, datasets, jobs, job_layers, layer_results.

Written 2025-01-01.
"""

import sqlalchemy as sa
from alembic import op

from service.migrations.columns import artifact_columns, create_job_table

revision = "0001"
down_revision = None

INDEXED_FLOATS = (
    "alpha",
    "gamma",
    "s",
    "s_eig",
    "predicted_s",
    "triangle_relative_error",
    "r2_alpha",
    "r2_gamma",
    "pr_h",
    "wall_seconds",
)


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        *artifact_columns(sa.Column("arch", sa.String(64)), sa.Column("config_json", sa.Text())),
    )
    op.create_index("ix_checkpoints_arch", "checkpoints", ["arch"])
    op.create_index("ix_checkpoints_created_at", "checkpoints", ["created_at"])

    op.create_table("datasets", *artifact_columns(sa.Column("n_examples", sa.Integer())))
    op.create_index("ix_datasets_created_at", "datasets", ["created_at"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("checkpoint_id", sa.String(128), nullable=False),
        sa.Column("dataset_ref", sa.String(128), nullable=False),
        sa.Column("arch", sa.String(64)),
        sa.Column("batch_id", sa.String(36)),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("error", sa.Text()),
        sa.Column("provenance_json", sa.Text()),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_checkpoint_id", "jobs", ["checkpoint_id"])
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    create_job_table(
        "job_layers",
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("layer_name", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.UniqueConstraint("job_id", "layer_name", name="uq_job_layers_job_layer"),
    )

    create_job_table(
        "layer_results",
        sa.Column("layer_name", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("checkpoint_id", sa.String(128)),
        sa.Column("arch", sa.String(64)),
        *(sa.Column(name, sa.Float()) for name in INDEXED_FLOATS),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(64)),
        sa.Column("hostname", sa.String(255)),
        sa.Column("checkpoint_sha256", sa.String(64)),
        sa.Column("data_sha256", sa.String(64)),
        sa.Column("data_seed", sa.Integer(), nullable=False),
        sa.Column("data_indices", sa.Text(), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("versions", sa.Text(), nullable=False),
        sa.Column("profile_blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "layer_name", name="uq_layer_results_job_layer"),
    )
    for name in ("kind", "checkpoint_id", "arch", "node_id", *INDEXED_FLOATS):
        op.create_index(f"ix_layer_results_{name}", "layer_results", [name])
    op.create_index("ix_layer_results_kind_alpha", "layer_results", ["kind", "alpha"])


def downgrade() -> None:
    op.drop_table("layer_results")
    op.drop_table("job_layers")
    op.drop_table("jobs")
    op.drop_table("datasets")
    op.drop_table("checkpoints")
