"""Stored profiles move to their own table; (kind, gamma) and (kind, s) indexes.

Layer listings filter and sort on the scalar columns of ``layer_results``. With the
compressed profile inline, each SQLite row spilled over a page and a filter matching 10⁴
rows read 10⁴ pages; kept apart, the hot table stays compact (PostgreSQL already moved the
blobs out of line through TOAST). Existing blobs are copied, not recomputed.

Written 2026-11-28.
"""

import sqlalchemy as sa
from alembic import op

from service.migrations.columns import BigId

revision = "0002"
down_revision = "0001"

KIND_PAIRS = ("gamma", "s")


def upgrade() -> None:
    op.create_table(
        "layer_profiles",
        sa.Column(
            "layer_id",
            BigId,
            sa.ForeignKey("layer_results.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
    )
    op.execute(
        "INSERT INTO layer_profiles (layer_id, blob) SELECT id, profile_blob FROM layer_results"
    )
    with op.batch_alter_table("layer_results") as batch:
        batch.drop_column("profile_blob")
    for name in KIND_PAIRS:
        op.create_index(f"ix_layer_results_kind_{name}", "layer_results", ["kind", name])


def downgrade() -> None:
    for name in KIND_PAIRS:
        op.drop_index(f"ix_layer_results_kind_{name}", "layer_results")
    with op.batch_alter_table("layer_results") as batch:
        batch.add_column(sa.Column("profile_blob", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE layer_results SET profile_blob = "
        "(SELECT blob FROM layer_profiles WHERE layer_profiles.layer_id = layer_results.id)"
    )
    op.drop_table("layer_profiles")
