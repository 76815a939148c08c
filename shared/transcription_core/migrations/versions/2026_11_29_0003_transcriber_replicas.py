"""transcriber replicas report what they can take and what they run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:00:00

Each transcriber process keeps one row up to date (at start, at every job it starts or
ends, every third of LEASE_SECONDS) and deletes it when it stops. The orchestrator
triggers only as many jobs as these rows have free slots, each at the replica that has
the room, so a trigger is not refused in steady state ("Capacity follows the queue").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcriber_replicas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("accepting", sa.Boolean(), nullable=False),
        sa.Column("model_saturated", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcriber_replicas")),
    )


def downgrade() -> None:
    op.drop_table("transcriber_replicas")
