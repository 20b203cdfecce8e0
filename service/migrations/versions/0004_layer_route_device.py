"""Stored layers carry their h_k route and its reason, and the rest of their Provenance: the
data set's name and the torch device that computed them.

``route`` and ``route_reason`` were kept in the stored profile alone; they become columns
(filtered on by ``GET /v1/layers``), filled for the layers stored before from their stored
profiles. ``data_name`` and ``device`` were never stored: they stay null on those layers.

Written 2026-12-02.
"""

import json
import zlib

import sqlalchemy as sa
from alembic import op

revision = "0004_layer_route_device"
down_revision = "0003_job_labels"

INDEXED = ("route", "route_reason")
CHUNK = 1000


def upgrade() -> None:
    with op.batch_alter_table("layer_results") as batch:
        batch.add_column(sa.Column("route", sa.String(32), nullable=True))
        batch.add_column(sa.Column("route_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("data_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("device", sa.String(128), nullable=True))
    for name in INDEXED:
        op.create_index(f"ix_layer_results_{name}", "layer_results", [name])
    _routes_from_profiles()


def _routes_from_profiles() -> None:
    """Each stored layer's route and reason, read from its stored profile (zlib JSON), written
    a chunk of layers at a time."""
    conn = op.get_bind()
    profiles = sa.table("layer_profiles", sa.column("layer_id"), sa.column("blob"))
    results = sa.table(
        "layer_results", sa.column("id"), sa.column("route"), sa.column("route_reason")
    )
    fill = (
        results.update()
        .where(results.c.id == sa.bindparam("layer_id"))
        .values(route=sa.bindparam("stored_route"), route_reason=sa.bindparam("stored_reason"))
    )
    after = -1
    while True:
        rows = conn.execute(
            sa.select(profiles.c.layer_id, profiles.c.blob)
            .where(profiles.c.layer_id > after)
            .order_by(profiles.c.layer_id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        routed = []
        for layer_id, blob in rows:
            stored = json.loads(zlib.decompress(blob))
            route, reason = stored.get("route"), stored.get("route_reason")
            if route is not None or reason is not None:
                routed.append(
                    {"layer_id": layer_id, "stored_route": route, "stored_reason": reason}
                )
        if routed:
            conn.execute(fill, routed)
        after = rows[-1][0]


def downgrade() -> None:
    for name in INDEXED:
        op.drop_index(f"ix_layer_results_{name}", "layer_results")
    with op.batch_alter_table("layer_results") as batch:
        batch.drop_column("device")
        batch.drop_column("data_name")
        batch.drop_column("route_reason")
        batch.drop_column("route")
