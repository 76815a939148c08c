"""partial indexes for the hot queries: jobs to claim and jobs in flight

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00

The claim round, the in-flight count, lease recovery and the orchestrator's next wake-up
read only unfinished jobs, but the indexes they used, (status, due_at) and (status,
lease_expires_at), held every job ever run: at 600 jobs a minute, 26 million rows a
month. Their replacements hold only the rows those queries read: claimable jobs (QUEUED,
FAILED, SEND_FAILED) by tenant and due time (the claim's round-robin picks each tenant's
next due job from it) and by due time alone (the next wake-up), and in-flight jobs
(TRIGGERED, PROCESSING) by lease.

On PostgreSQL the indexes are built and dropped CONCURRENTLY, outside the migration's
transaction, so a table of millions of jobs keeps taking writes meanwhile; a build that
fails leaves an INVALID index, which running the migration again replaces.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CLAIMABLE = "status IN ('FAILED', 'QUEUED', 'SEND_FAILED')"
IN_FLIGHT = "status IN ('PROCESSING', 'TRIGGERED')"

NEW = [
    ("ix_jobs_claimable_tenant_due_at_id", ["tenant", "due_at", "id"], CLAIMABLE),
    ("ix_jobs_claimable_due_at", ["due_at"], CLAIMABLE),
    ("ix_jobs_in_flight_lease_expires_at", ["lease_expires_at"], IN_FLIGHT),
]
OLD = [
    ("ix_jobs_status_due_at", ["status", "due_at"]),
    ("ix_jobs_status_lease_expires_at", ["status", "lease_expires_at"]),
]


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgres():
        with op.get_context().autocommit_block():
            for name, columns, where in NEW:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")  # an INVALID leftover
                op.execute(
                    f"CREATE INDEX CONCURRENTLY {name} ON jobs ({', '.join(columns)}) WHERE {where}"
                )
            for name, _columns in OLD:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        return
    with op.batch_alter_table("jobs") as batch_op:
        for name, columns, where in NEW:
            batch_op.create_index(name, columns, sqlite_where=sa.text(where))
        for name, _columns in OLD:
            batch_op.drop_index(name)


def downgrade() -> None:
    if _postgres():
        with op.get_context().autocommit_block():
            for name, columns in OLD:
                op.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON jobs ({', '.join(columns)})"
                )
            for name, _columns, _where in NEW:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        return
    with op.batch_alter_table("jobs") as batch_op:
        for name, columns in OLD:
            batch_op.create_index(name, columns)
        for name, _columns, _where in NEW:
            batch_op.drop_index(name)
