"""The orchestrator's rounds: claim due jobs up to the in-flight limit, stop the ones at
the trigger bound, put refused triggers back, and recover jobs whose lease expired."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import lifecycle
from transcription_core.job import Job
from transcription_core.models import utcnow
from transcription_core.repository.history import coalesce_refusals, triggers_since_start
from transcription_core.repository.tables import jobs
from transcription_core.repository.transitions import apply, apply_locked
from transcription_core.retry import RetryPolicy
from transcription_core.status import CLAIMABLE, IN_FLIGHT, JobStatus, allowed_from

#: Serialises claim rounds of concurrent orchestrator replicas on PostgreSQL, so the
#: in-flight count and the claim that depends on it cannot interleave.
CLAIM_LOCK_KEY = 0x7472616E  # "tran"


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    attempt: int
    from_status: JobStatus
    tenant: str
    #: The job as the claim left it (TRIGGERED at ``attempt``).
    job: Job


@dataclass(frozen=True)
class StoppedJob:
    id: str
    triggers: int
    reason: str


async def count_in_flight(conn: AsyncConnection) -> int:
    return (
        await conn.scalar(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.in_(IN_FLIGHT))
        )
        or 0
    )


async def claim_due_jobs(
    conn: AsyncConnection,
    *,
    max_in_flight: int,
    lease_seconds: float,
    actor: str = "orchestrator",
    batch_limit: int = 100,
    max_triggers: int | None = None,
    stopped: list[StoppedJob] | None = None,
) -> list[ClaimedJob]:
    """Claim the oldest due jobs, round-robin across tenants, up to the in-flight limit.

    Each claimed job becomes TRIGGERED with its attempt counted and a lease
    (``lifecycle.claimed``). Concurrent claimers are serialised (an advisory transaction
    lock on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so the
    in-flight count they act on is exact. Fairness: jobs are ranked within their tenant
    by due time and taken rank by rank, so a tenant's single job goes out in the first
    round whatever others have queued.

    The hard bound: a due job already triggered ``max_triggers`` times since it last
    started (:func:`triggers_since_start`) is not claimed but stopped
    (``lifecycle.stopped``), and appended to ``stopped``. Every trigger passes here, so
    whatever the decisions after each attempt, no job is triggered more often.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
    room = min(max_in_flight - await count_in_flight(conn), batch_limit)
    if room <= 0:
        return []
    now = utcnow()
    ranked = (
        sa.select(
            jobs.c.id,
            jobs.c.due_at,
            sa.func.row_number()
            .over(partition_by=jobs.c.tenant, order_by=(jobs.c.due_at, jobs.c.id))
            .label("rank"),
        )
        .where(jobs.c.status.in_(CLAIMABLE), jobs.c.due_at <= now)
        .subquery()
    )
    picked = (
        sa.select(ranked.c.id)
        .order_by(ranked.c.rank, ranked.c.due_at, ranked.c.id)
        .limit(room)
        .scalar_subquery()
    )
    locked = sa.select(jobs).where(
        jobs.c.id.in_(picked), jobs.c.status.in_(allowed_from(JobStatus.TRIGGERED))
    )
    if conn.dialect.name == "postgresql":
        locked = locked.with_for_update(skip_locked=True)
    candidates = [Job.from_row(row) for row in (await conn.execute(locked)).mappings()]
    if max_triggers is not None:
        spent = await _stop_spent_jobs(conn, candidates, max_triggers, actor, now)
        candidates = [c for c in candidates if c.id not in {job.id for job in spent}]
        if stopped is not None:
            stopped.extend(spent)
    changes = [lifecycle.claimed(job, lease_seconds, now) for job in candidates]
    await apply_locked(conn, changes, actor)
    return [
        ClaimedJob(c.job.id, c.after.attempts, c.job.status, c.job.tenant, c.after) for c in changes
    ]


async def _stop_spent_jobs(
    conn: AsyncConnection, candidates: Sequence[Job], max_triggers: int, actor: str, now: datetime
) -> list[StoppedJob]:
    """PERMAFAILED for each candidate already triggered ``max_triggers`` times."""
    maybe = [c for c in candidates if c.attempts >= max_triggers]
    if not maybe:  # the usual case: no query at all
        return []
    spent = []
    triggers = await triggers_since_start(conn, maybe)
    for job in maybe:
        change = lifecycle.stopped(job, triggers[job.id], max_triggers, now)
        if change is not None and await apply(conn, change, actor) is not None:
            spent.append(StoppedJob(job.id, triggers[job.id], change.reason or ""))
    return spent


async def return_to_queue(
    conn: AsyncConnection,
    job: ClaimedJob,
    detail: str,
    actor: str = "orchestrator",
    delay_seconds: float = 0.0,
) -> bool:
    """A trigger that never reached a worker (``lifecycle.refused``): back to the queue,
    due again after ``delay_seconds`` (the worker's Retry-After: not at once, or a full
    replica would be asked again and again).

    The job's history records the first refusal of a run of them (``TRIGGERED -> QUEUED``,
    reason ``TRIGGER_REFUSED``); a later one, claimed from that QUEUED, removes its claim's
    event and is counted in the first one's detail, so refusals never grow the history.
    """
    change = lifecycle.refused(job.job, detail, delay_seconds, utcnow())
    if await apply(conn, change, actor) is None:
        return False
    await coalesce_refusals(conn, job.id)
    return True


@dataclass(frozen=True)
class RecoveredJob:
    id: str
    attempt: int
    to_status: JobStatus


async def recover_expired_leases(
    conn: AsyncConnection,
    *,
    max_attempts: int,
    backoff_seconds: float,
    delivery_schedule: tuple[float, ...],
    actor: str = "orchestrator",
    limit: int = 500,
) -> list[RecoveredJob]:
    """In-flight jobs whose lease expired: their worker is lost (``lifecycle.lease_expired``,
    with this retry policy)."""
    policy = RetryPolicy(max_attempts, backoff_seconds, delivery_schedule)
    now = utcnow()
    query = (
        sa.select(jobs)
        .where(jobs.c.status.in_(IN_FLIGHT), jobs.c.lease_expires_at < now)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    recovered = []
    for row in (await conn.execute(query)).mappings().all():
        job = Job.from_row(row)
        change = lifecycle.lease_expired(job, policy, now)
        if await apply(conn, change, actor) is not None:
            recovered.append(RecoveredJob(job.id, job.attempts, change.to_status))
    return recovered


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the next claimable job falls due (for the orchestrator's sleep)."""
    due: datetime | None = await conn.scalar(
        sa.select(sa.func.min(jobs.c.due_at)).where(jobs.c.status.in_(CLAIMABLE))
    )
    return due
