"""new jobs are announced after commit, not by a per-row INSERT trigger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 20:30:00

A NOTIFY inside a transaction takes PostgreSQL's notification-queue lock at commit and
holds it until the commit is flushed, so every enqueue that notified waited for every
other one: the enqueue statement alone did 329 per second with the INSERT trigger and
1,924 without it (bench/results/enqueue-2026-11-24.md). The enqueue service now sends
one NOTIFY on the same channel at most every 10 ms, after its inserts committed
(``enqueue_service.notifier``). The UPDATE trigger stays: status changes are few and
each wakes the orchestrator for a freed slot or a job made claimable again.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs "
            "FOR EACH ROW EXECUTE FUNCTION notify_transcription_jobs()"
        )
