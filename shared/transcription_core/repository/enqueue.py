"""New jobs: the insert (two ways), the announcement, and idempotency keys."""

from __future__ import annotations

import json

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import lifecycle
from transcription_core.errors import DuplicateIdempotencyKey
from transcription_core.job import JOB_COLUMNS, Job, NewJob
from transcription_core.models import utcnow
from transcription_core.repository.history import log_events
from transcription_core.repository.tables import jobs


async def insert_job(conn: AsyncConnection, new: NewJob, actor: str = "enqueue") -> Job:
    """Insert a QUEUED job and its first event, in the caller's transaction. Raises
    :class:`DuplicateIdempotencyKey` if the key is taken (the caller must roll back).

    The unique constraint on (tenant, idempotency_key) decides between concurrent
    duplicates, not a read before the write. Nobody is notified: on PostgreSQL, call
    :func:`notify_new_jobs` after the commit (or let the enqueue service's notifier do it).
    The enqueue API's own path on PostgreSQL is :func:`insert_job_asyncpg`.
    """
    job, event = lifecycle.enqueued(new, utcnow())
    try:
        await conn.execute(jobs.insert().values(job.columns()))
    except IntegrityError as exc:
        if new.idempotency_key is not None:
            raise DuplicateIdempotencyKey(new.idempotency_key) from exc
        raise
    await log_events(conn, [event], actor)
    return job


#: :func:`insert_job` as one statement, the job's columns (``JOB_COLUMNS``) as ``$1..$n``
#: and its actor last: the job and its QUEUED event (the columns
#: ``lifecycle.enqueued`` gives it) in one round trip, in autocommit.
PG_INSERT_JOB_SQL = (
    f"WITH new_job AS (INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(JOB_COLUMNS)))}) "
    "RETURNING id, status, attempts, created_at) "
    "INSERT INTO job_events (job_id, to_status, attempt, actor, created_at) "
    f"SELECT id, status, attempts, ${len(JOB_COLUMNS) + 1}, created_at FROM new_job"
)


async def insert_job_asyncpg(conn: asyncpg.Connection, new: NewJob, actor: str = "enqueue") -> Job:
    """:func:`insert_job` on a plain asyncpg connection in autocommit, as one statement.

    Two paths to one insert, on purpose: this is the enqueue API's hot path on
    PostgreSQL, where SQLAlchemy's execution and result layers cost about ten times the
    CPU of the statement itself (bench/README.md, the ablation), and the API does
    nothing else per request. Both take the new job from ``lifecycle.enqueued`` and
    write every column of ``JOB_COLUMNS``; only the driver differs.
    """
    job, _event = lifecycle.enqueued(new, utcnow())
    columns = job.columns()
    columns["metadata"] = json.dumps(job.metadata)
    try:
        await conn.execute(PG_INSERT_JOB_SQL, *columns.values(), actor)
    except asyncpg.UniqueViolationError as exc:
        if new.idempotency_key is not None:
            raise DuplicateIdempotencyKey(new.idempotency_key) from exc
        raise
    return job


#: The channel the orchestrators LISTEN on. The jobs table's UPDATE trigger notifies it
#: when a job becomes claimable again or leaves flight; new jobs are announced by their
#: writer after commit (:func:`notify_new_jobs`), never inside the inserting transaction.
NOTIFY_CHANNEL = "transcription_jobs"
NOTIFY_SQL = f"NOTIFY {NOTIFY_CHANNEL}"
#: The payload of "a slot freed up": a transcriber's (its row shows more room) and the
#: jobs table trigger's for a job leaving flight for good (migration 0007); work coming
#: (a job enqueued or made claimable) has an empty one. A freed slot can only matter to
#: an orchestrator whose last round left due jobs waiting for room, so the others skip
#: the round it would cost.
SLOT_FREED = "slot"
SLOT_FREED_SQL = f"NOTIFY {NOTIFY_CHANNEL}, '{SLOT_FREED}'"


async def notify_new_jobs(conn: AsyncConnection) -> None:
    """Wake the orchestrators (PostgreSQL; a no-op on SQLite, where they poll). Call it
    after the jobs' commit, in a transaction of its own."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text(NOTIFY_SQL))


async def notify_slot_freed(conn: AsyncConnection) -> None:
    """Tell the orchestrators that a replica has more room (PostgreSQL; a no-op on
    SQLite). Sent in the transaction that writes the replica's row, so it arrives with
    the row committed."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text(SLOT_FREED_SQL))


# --- idempotency keys -----------------------------------------------------------------


async def job_by_idempotency_key(conn: AsyncConnection, tenant: str, key: str) -> Job | None:
    result = await conn.execute(
        sa.select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key == key)
    )
    row = result.mappings().first()
    return None if row is None else Job.from_row(row)


async def release_idempotency_key(conn: AsyncConnection, job_id: str, key: str) -> bool:
    """Free an expired key (older than the replay window) so a new job may take it."""
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.idempotency_key == key)
        .values(idempotency_key=None)
    )
    return result.rowcount == 1
