"""job options: diarize, speakers, min_speakers, max_speakers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 07:00:00

Speaker labels (issue 18): whether a job asked for them, and its speaker-count hint,
exact or bounded (each optional). Fixed at enqueue. Jobs enqueued before have none. On
PostgreSQL (11+) adding a column with a constant default, or a nullable one, rewrites
nothing, so a table of millions of jobs takes writes meanwhile.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = ("diarize", "speakers", "min_speakers", "max_speakers")


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("diarize", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    for name in COLUMNS[1:]:
        op.add_column("jobs", sa.Column(name, sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
