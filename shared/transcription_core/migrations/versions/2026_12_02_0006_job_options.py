"""job options: task, word_timestamps, prompt, hotwords, multichannel

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 04:00:00

The options a client may give ``POST /v1/jobs`` (issue 15), one column each, fixed at
enqueue. Jobs enqueued before keep what they had: a transcription without them (the
server defaults). On PostgreSQL (11+) adding a column with a constant default rewrites
nothing, so a table of millions of jobs takes writes meanwhile.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("task", "word_timestamps", "prompt", "hotwords", "multichannel")


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("task", sa.String(length=16), server_default="transcribe", nullable=False),
    )
    op.add_column(
        "jobs",
        sa.Column("word_timestamps", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("jobs", sa.Column("prompt", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("hotwords", sa.Text(), nullable=True))
    op.add_column(
        "jobs",
        sa.Column("multichannel", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
