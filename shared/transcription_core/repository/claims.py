"""The orchestrator's rounds: claim due jobs up to the in-flight limit, stop the ones at
the trigger bound, put refused triggers back, and recover jobs whose lease expired."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import lifecycle
from transcription_core.job import Job
from transcription_core.models import UTCDateTime, utcnow
from transcription_core.repository.history import coalesce_refusals, triggers_since_start
from transcription_core.repository.tables import jobs
from transcription_core.repository.transitions import apply, apply_locked
from transcription_core.retry import RetryPolicy
from transcription_core.status import CLAIMABLE, IN_FLIGHT, JobStatus, allowed_from, sql_in

#: Serialises claim rounds of concurrent orchestrator replicas on PostgreSQL, so the
#: in-flight count and the claim that depends on it cannot interleave.
CLAIM_LOCK_KEY = 0x7472616E  # "tran"


#: Takes the claim lock and, for the rest of the round's transaction, has PostgreSQL plan
#: each statement once per connection (its prepared statement's generic plan) instead of
#: again at every round: planning the round's pick (a recursive loose index scan) took
#: 1.3 to 2.6 ms, running it 0.2 to 0.7 ms. The plan cannot depend on the values: the
#: pick reads the same indexes whatever the cursor, the time or the room.
_LOCK_AND_GENERIC_PLANS = sa.select(
    sa.func.pg_advisory_xact_lock(CLAIM_LOCK_KEY),
    sa.func.set_config("plan_cache_mode", "force_generic_plan", True),
)


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
            sa.select(sa.func.count()).select_from(jobs).where(sa.text(sql_in(IN_FLIGHT)))
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
    """Claim due jobs, round-robin across tenants, up to the in-flight limit.

    Each claimed job becomes TRIGGERED with its attempt counted and a lease
    (``lifecycle.claimed``). Concurrent claimers are serialised (an advisory transaction
    lock on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so the
    in-flight count they act on is exact. Fairness (:func:`_pick_fairly`): tenants with
    due work take turns, one job each, oldest first within a tenant, from where the
    previous round stopped; a round reads only the jobs it takes, whatever the backlog or
    the history.

    The hard bound: a due job already triggered ``max_triggers`` times since it last
    started (:func:`triggers_since_start`) is not claimed but stopped
    (``lifecycle.stopped``), and appended to ``stopped``. Every trigger passes here, so
    whatever the decisions after each attempt, no job is triggered more often.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_AND_GENERIC_PLANS)
    now = utcnow()
    candidates, turn = await _pick_fairly(conn, max_in_flight, batch_limit, now)
    if max_triggers is not None:
        spent = await _stop_spent_jobs(conn, candidates, max_triggers, actor, now)
        candidates = [c for c in candidates if c.id not in {job.id for job in spent}]
        if stopped is not None:
            stopped.extend(spent)
    changes = [lifecycle.claimed(job, lease_seconds, now) for job in candidates]
    cursor = None if turn is None else (CLAIM_CURSOR_SETTING, turn)
    await apply_locked(conn, changes, actor, setting=cursor)
    return [
        ClaimedJob(c.job.id, after.attempts, c.job.status, c.job.tenant, after)
        for c in changes
        for after in (c.after,)
    ]


#: The ``runtime_settings`` row that holds the claim's place in the round-robin: the
#: tenant served last. Written by the claim rounds, under the claim lock.
CLAIM_CURSOR_SETTING = "claim_cursor"

_CLAIMABLE_J = sql_in(CLAIMABLE, "j.status")

#: The tenants with claimable jobs after ``{after}`` (and up to ``{upto}``), in name
#: order, each with its oldest due job: a "loose index scan" of
#: ``ix_jobs_claimable_tenant_due_at_id``, one probe per tenant visited, and a second to
#: find that tenant's job. Recursive queries run only as far as their reader needs (on
#: PostgreSQL), so a LIMIT above this stops the scan.
_HEADS_SQL = f"""
SELECT id FROM (
    WITH RECURSIVE t(tenant) AS (
        SELECT min(j.tenant) FROM jobs j WHERE {_CLAIMABLE_J} AND j.tenant > {{after}}
      UNION ALL
        SELECT (SELECT min(j.tenant) FROM jobs j
                WHERE {_CLAIMABLE_J} AND j.tenant > t.tenant)
        FROM t WHERE t.tenant IS NOT NULL {{upto_recursion}}
    )
    SELECT t.tenant AS tenant,
           (SELECT j.id FROM jobs j
            WHERE j.tenant = t.tenant AND {_CLAIMABLE_J} AND j.due_at <= :now
            ORDER BY j.due_at, j.id LIMIT 1) AS id
    FROM t WHERE t.tenant IS NOT NULL {{upto}}
) AS heads
WHERE id IS NOT NULL
"""

#: What the round may take, read in the statement that picks (one round trip fewer):
#: ``room``, the in-flight limit less the jobs in flight, at most the batch limit; and
#: ``cursor``, the tenant served last (``''``: none yet).
_STATE_SQL = f"""
SELECT CASE WHEN in_flight.n >= :max_in_flight THEN 0
            WHEN :max_in_flight - in_flight.n > :batch_limit THEN :batch_limit
            ELSE :max_in_flight - in_flight.n END AS room,
       coalesce((SELECT value FROM runtime_settings WHERE name = :cursor_setting), '')
           AS cursor
FROM (SELECT count(*) AS n FROM jobs j WHERE {sql_in(IN_FLIGHT, "j.status")}) AS in_flight
"""

_CURSOR = "(SELECT cursor FROM state)"

#: The round's first pick: the jobs of the first ``room`` tenants with a due job from the
#: cursor on, wrapping around (one each, their oldest), locked (``{lock}``: PostgreSQL
#: skips the rows another transaction holds), in the round-robin's order, as the database
#: orders names (its collation, which need not be Python's); each row with the room and
#: the cursor.
_ROUND_SQL = f"""
WITH state AS ({_STATE_SQL}),
picked AS (
    SELECT id FROM ({_HEADS_SQL.format(after=_CURSOR, upto_recursion="", upto="")}) AS a
    UNION ALL
    SELECT id FROM ({
    _HEADS_SQL.format(
        after="''",
        upto_recursion=f"AND t.tenant < {_CURSOR}",
        upto=f"AND t.tenant <= {_CURSOR}",
    )
}) AS b
    LIMIT (SELECT room FROM state)
)
SELECT jobs.*, (SELECT room FROM state) AS claim_room, {_CURSOR} AS claim_cursor
FROM jobs
WHERE jobs.id IN (SELECT id FROM picked)
  AND {sql_in(allowed_from(JobStatus.TRIGGERED), "jobs.status")}
ORDER BY CASE WHEN jobs.tenant <= {_CURSOR} THEN 1 ELSE 0 END, jobs.tenant
{{lock}}
"""

#: Each given tenant's due jobs ranked ``:done + 1`` to ``:done + :k`` (PostgreSQL: the
#: next ``:k`` of each, read from the index; SQLite, simply: all of them ranked).
_NEXT_RANKS_PG_SQL = f"""
SELECT n.id FROM unnest(CAST(:tenants AS varchar[])) AS t(tenant)
CROSS JOIN LATERAL (
    SELECT j.id FROM jobs j
    WHERE j.tenant = t.tenant AND {_CLAIMABLE_J} AND j.due_at <= :now
    ORDER BY j.due_at, j.id LIMIT :k OFFSET :done
) AS n
"""
_NEXT_RANKS_SQLITE_SQL = f"""
SELECT id FROM (
    SELECT j.id, row_number() OVER (PARTITION BY j.tenant ORDER BY j.due_at, j.id) AS rank
    FROM jobs j
    WHERE j.tenant IN :tenants AND {_CLAIMABLE_J} AND j.due_at <= :now
) AS ranked
WHERE rank > :done AND rank <= :done + :k
"""


@functools.lru_cache(maxsize=8)
def _round_statement(dialect: str) -> sa.TextualSelect:
    """``_ROUND_SQL`` for ``dialect``, built once (the claim runs it every round)."""
    lock = "FOR UPDATE OF jobs SKIP LOCKED" if dialect == "postgresql" else ""
    return (
        sa.text(_ROUND_SQL.format(lock=lock))
        .bindparams(sa.bindparam("now", type_=UTCDateTime()))
        .columns(
            *jobs.c, sa.column("claim_room", sa.Integer()), sa.column("claim_cursor", sa.String())
        )
    )


@functools.lru_cache(maxsize=8)
def _next_ranks_statement(dialect: str) -> sa.Select[Any]:
    """The jobs :data:`_NEXT_RANKS_PG_SQL` (or ``_SQLITE_SQL``) selects, still claimable,
    locked (PostgreSQL: the rows another transaction holds are skipped)."""
    if dialect == "postgresql":
        ranks = sa.text(_NEXT_RANKS_PG_SQL).bindparams(
            sa.bindparam("tenants", type_=sa.ARRAY(sa.String()))
        )
    else:
        ranks = sa.text(_NEXT_RANKS_SQLITE_SQL).bindparams(sa.bindparam("tenants", expanding=True))
    ids = ranks.bindparams(sa.bindparam("now", type_=UTCDateTime())).columns(sa.column("id"))
    query = sa.select(jobs).where(
        jobs.c.id.in_(ids), jobs.c.status.in_(allowed_from(JobStatus.TRIGGERED))
    )
    return query.with_for_update(skip_locked=True) if dialect == "postgresql" else query


async def _pick_fairly(
    conn: AsyncConnection, max_in_flight: int, batch_limit: int, now: datetime
) -> tuple[list[Job], str | None]:
    """Up to ``room`` due jobs (the in-flight limit less the jobs in flight, at most
    ``batch_limit``), locked, in the round-robin's order, and where the cursor moves: the
    tenant served last, which the claim writes with the jobs (``None``: it stays).

    The tenants with due work after the one served last (the cursor, wrapping around to
    the first) give one job each, their oldest, until ``room`` is filled: a round reads
    two index entries per tenant it visits. Only when every tenant with due work has had
    one do they give more, rank by rank (each tenant's second, then third...), oldest
    first within a rank. The cursor moves to the last tenant served, so with one slot
    freed per round tenants still take turns.
    """
    values = {
        "now": now,
        "max_in_flight": max_in_flight,
        "batch_limit": batch_limit,
        "cursor_setting": CLAIM_CURSOR_SETTING,
    }
    rows = (await conn.execute(_round_statement(conn.dialect.name), values)).mappings().all()
    if not rows:
        return [], None
    room, cursor = int(rows[0]["claim_room"]), rows[0]["claim_cursor"]
    heads = [Job.from_row(row) for row in rows]
    last = heads[-1].tenant
    picked = heads
    tenants = [job.tenant for job in heads]
    done = 1
    while len(picked) < room and tenants:
        k = -(-(room - len(picked)) // len(tenants))
        ranks = {"tenants": tenants, "now": now, "done": done, "k": k}
        result = await conn.execute(_next_ranks_statement(conn.dialect.name), ranks)
        # Each statement reads what is committed when it runs: a job queued meanwhile
        # ahead of a tenant's head (a recovered lease) moves that head to a rank read
        # here, and our own lock does not skip it. A job is taken once.
        taken = {job.id for job in picked}
        more = [job for job in map(Job.from_row, result.mappings()) if job.id not in taken]
        rank: dict[str, int] = {}
        ranked = []
        for job in sorted(more, key=lambda job: (job.tenant, job.due_at, job.id)):
            rank[job.tenant] = rank.get(job.tenant, done) + 1
            ranked.append((rank[job.tenant], job.due_at, job.id, job))
        picked += [job for *_order, job in sorted(ranked)[: room - len(picked)]]
        tenants = [tenant for tenant in tenants if rank.get(tenant) == done + k]
        done += k
    return picked, (None if last == cursor else last)


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
