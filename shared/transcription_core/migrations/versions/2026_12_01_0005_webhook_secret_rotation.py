"""a tenant's previous webhook secret, still signing until the end of a rotation's overlap

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:00:00

``transcription tenants rotate-webhook-secret`` gives a tenant a new secret and keeps the
old one for an overlap window: until ``previous_webhook_secret_expires_at`` every webhook
carries two signatures (Standard Webhooks allows several in ``webhook-signature``), so a
receiver verifies with either secret while it switches over. Two nullable columns; adding
them rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("previous_webhook_secret", sa.String(length=128)))
        batch.add_column(
            sa.Column("previous_webhook_secret_expires_at", sa.DateTime(timezone=True))
        )


def downgrade() -> None:
    # Not batch mode: on SQLite that copies the table, and dropping the old ``tenants``
    # breaks the jobs' foreign keys. SQLite 3.35+ drops a plain column in place.
    op.drop_column("tenants", "previous_webhook_secret_expires_at")
    op.drop_column("tenants", "previous_webhook_secret")
