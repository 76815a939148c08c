"""a job leaving flight for good notifies with the payload 'slot'

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:00:00

The jobs table's UPDATE trigger woke the orchestrator with an empty payload both when a
job became claimable (QUEUED, FAILED, SEND_FAILED) and when it left flight for good
(SUCCEEDED, PERMAFAILED, CANCELED). The second only frees a slot of the in-flight
budget: worth a claim round only while due jobs wait for room. It now says so with the
payload ``repository.SLOT_FREED``, as a transcriber's freed slot does, and the
orchestrator skips the round when its last one left no due job waiting: one round per
finished job fewer when the queue keeps up (bench/results/ceiling-claims-2026-11-28.md).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "transcription_jobs"
#: The same channel, trigger and conditions as in 0001; only the payload differs.
UPGRADED = f"""
CREATE OR REPLACE FUNCTION notify_transcription_jobs() RETURNS trigger AS $$
BEGIN
    IF NEW.status IN ('QUEUED', 'FAILED', 'SEND_FAILED') THEN
        PERFORM pg_notify('{CHANNEL}', '');
    ELSE
        PERFORM pg_notify('{CHANNEL}', 'slot');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
DOWNGRADED = f"""
CREATE OR REPLACE FUNCTION notify_transcription_jobs() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UPGRADED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DOWNGRADED)
