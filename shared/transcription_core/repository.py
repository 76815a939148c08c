"""Every SQL statement about jobs, tenants and their events.

Functions take an open ``AsyncConnection`` and never commit: the caller owns the
transaction (``async with engine.begin() as conn``), one commit point per request or
round. Status changes are compare-and-set updates guarded by the status machine
(``status.py``): no row back means another writer moved the job first, never a silent
overwrite, and each change appends a row to ``job_events`` in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.errors import DuplicateIdempotencyKey, TenantExists
from transcription_core.models import (
    ApiKey,
    Job,
    JobChunk,
    JobEvent,
    JobRow,
    RuntimeSetting,
    Tenant,
    Transcript,
    UTCDateTime,
    utcnow,
)
from transcription_core.retry import RetryDecision, decide_delivery_retry, decide_retry
from transcription_core.status import (
    CLAIMABLE,
    FAILURE_STATUSES,
    IN_FLIGHT,
    TERMINAL,
    FailureReason,
    InvalidTransition,
    JobStatus,
    check_transition,
    sql_in,
)
from transcription_core.storable import text_problem

jobs = cast(sa.Table, Job.__table__)
events = cast(sa.Table, JobEvent.__table__)
tenants = cast(sa.Table, Tenant.__table__)
api_keys = cast(sa.Table, ApiKey.__table__)
transcripts = cast(sa.Table, Transcript.__table__)
chunks = cast(sa.Table, JobChunk.__table__)
runtime_settings = cast(sa.Table, RuntimeSetting.__table__)

#: Serialises claim rounds of concurrent orchestrator replicas on PostgreSQL, so the
#: in-flight count and the claim that depends on it cannot interleave.
CLAIM_LOCK_KEY = 0x7472616E  # "tran"

API_KEY_PREFIX = "tsk_"

SUCCEEDED_EVENT = "transcription.succeeded"
FAILED_EVENT = "transcription.failed"


def new_message_id() -> str:
    """A Standard Webhooks ``webhook-id``: one per message, reused on its retries."""
    return "msg_" + uuid.uuid4().hex


# --- tenants and keys ---------------------------------------------------------------


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class NewTenant:
    tenant: str
    api_key: str
    webhook_secret: str


async def create_tenant(conn: AsyncConnection, name: str) -> NewTenant:
    now = utcnow()
    secret = new_webhook_secret()
    try:
        async with conn.begin_nested():
            await conn.execute(
                tenants.insert().values(name=name, webhook_secret=secret, created_at=now)
            )
    except IntegrityError as exc:
        raise TenantExists(f"tenant {name!r} already exists") from exc
    api_key = await add_api_key(conn, name)
    return NewTenant(name, api_key, secret)


async def add_api_key(conn: AsyncConnection, tenant: str) -> str:
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        api_keys.insert().values(
            key_hash=hash_api_key(api_key),
            tenant=tenant,
            key_prefix=api_key[:12],
            created_at=utcnow(),
        )
    )
    return api_key


async def tenant_for_api_key(conn: AsyncConnection, api_key: str) -> str | None:
    return await conn.scalar(
        sa.select(api_keys.c.tenant).where(
            api_keys.c.key_hash == hash_api_key(api_key), api_keys.c.revoked_at.is_(None)
        )
    )


async def tenant_webhook_secret(conn: AsyncConnection, tenant: str) -> str | None:
    return await conn.scalar(sa.select(tenants.c.webhook_secret).where(tenants.c.name == tenant))


async def list_tenants(conn: AsyncConnection) -> list[str]:
    return list(await conn.scalars(sa.select(tenants.c.name).order_by(tenants.c.name)))


# --- events ---------------------------------------------------------------------------


async def _log_events(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await conn.execute(events.insert(), list(rows))


def _event(
    job_id: str,
    from_status: JobStatus | None,
    to_status: JobStatus,
    attempt: int,
    actor: str,
    now: datetime,
    reason: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "from_status": from_status,
        "to_status": to_status,
        "reason": reason,
        "detail": detail,
        "attempt": attempt,
        "actor": actor,
        "created_at": now,
    }


async def job_events(conn: AsyncConnection, job_id: str) -> list[sa.RowMapping]:
    result = await conn.execute(
        sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id)
    )
    return list(result.mappings())


# --- enqueue and read -----------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    tenant: str
    media_url: str
    webhook_url: str
    external_id: str | None = None
    language: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


def _queued_job(new: NewJob) -> dict[str, Any]:
    """Every column of a new QUEUED job: what the insert writes and what it returns."""
    now = utcnow()
    return dict.fromkeys(jobs.c.keys()) | {
        "id": str(uuid.uuid4()),
        "tenant": new.tenant,
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "deliveries": 0,
        "external_id": new.external_id,
        "media_url": new.media_url,
        "webhook_url": new.webhook_url,
        "language": new.language,
        "metadata": new.metadata or {},
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def insert_job(conn: AsyncConnection, new: NewJob, actor: str = "enqueue") -> sa.RowMapping:
    """Insert a QUEUED job and its first event, in the caller's transaction. Raises
    :class:`DuplicateIdempotencyKey` if the key is taken (the caller must roll back).

    The unique constraint on (tenant, idempotency_key) decides between concurrent
    duplicates, not a read before the write. Nobody is notified: on PostgreSQL, call
    :func:`notify_new_jobs` after the commit (or let the enqueue service's notifier do it).
    The enqueue API's own path on PostgreSQL is :func:`insert_job_asyncpg`.
    """
    job = _queued_job(new)
    try:
        row = (await conn.execute(_INSERT_JOB, job)).mappings().one()
    except IntegrityError as exc:
        if new.idempotency_key is not None:
            raise DuplicateIdempotencyKey(new.idempotency_key) from exc
        raise
    event = _event(job["id"], None, JobStatus.QUEUED, 0, actor, job["created_at"])
    await _log_events(conn, [event])
    return row


_INSERT_JOB = jobs.insert().returning(*jobs.c)

#: The columns a new job sets; the rest start NULL.
_NEW_JOB_COLUMNS = (
    "id", "tenant", "status", "attempts", "deliveries", "external_id", "media_url",
    "webhook_url", "language", "metadata", "idempotency_key", "request_hash", "due_at",
    "created_at", "updated_at",
)  # fmt: skip
#: The job and its QUEUED event in one statement: one round trip in autocommit.
PG_INSERT_JOB_SQL = (
    f"WITH new_job AS (INSERT INTO jobs ({', '.join(_NEW_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_NEW_JOB_COLUMNS)))}) "
    "RETURNING id, status, attempts, created_at) "
    "INSERT INTO job_events (job_id, to_status, attempt, actor, created_at) "
    f"SELECT id, status, attempts, ${len(_NEW_JOB_COLUMNS) + 1}, created_at FROM new_job"
)


async def insert_job_asyncpg(
    conn: asyncpg.Connection, new: NewJob, actor: str = "enqueue"
) -> dict[str, Any]:
    """:func:`insert_job` on a plain asyncpg connection in autocommit, as one statement.

    The enqueue API's hot path on PostgreSQL: SQLAlchemy's execution and result layers
    cost about ten times the CPU of the statement itself (bench/README.md, the ablation),
    and the API does nothing else per request. Returns the job's columns.
    """
    job = _queued_job(new)
    args = [job[column] for column in _NEW_JOB_COLUMNS]
    args[_NEW_JOB_COLUMNS.index("metadata")] = json.dumps(job["metadata"])
    try:
        await conn.execute(PG_INSERT_JOB_SQL, *args, actor)
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


async def notify_new_jobs(conn: AsyncConnection) -> None:
    """Wake the orchestrators (PostgreSQL; a no-op on SQLite, where they poll). Call it
    after the jobs' commit, in a transaction of its own."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text(NOTIFY_SQL))


async def job_by_idempotency_key(
    conn: AsyncConnection, tenant: str, key: str
) -> sa.RowMapping | None:
    result = await conn.execute(
        sa.select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key == key)
    )
    return result.mappings().first()


async def release_idempotency_key(conn: AsyncConnection, job_id: str, key: str) -> bool:
    """Free an expired key (older than the replay window) so a new job may take it."""
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.idempotency_key == key)
        .values(idempotency_key=None)
    )
    return result.rowcount == 1


async def get_job(
    conn: AsyncConnection, job_id: str, tenant: str | None = None, *, for_update: bool = False
) -> sa.RowMapping | None:
    """One job; ``for_update`` locks its row until the transaction ends (PostgreSQL; on
    SQLite the transaction already holds the write lock)."""
    query = sa.select(jobs).where(jobs.c.id == job_id)
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return (await conn.execute(query)).mappings().first()


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ``ValueError`` for anything that is not a cursor this module made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
    except Exception as exc:  # any malformed input is the same client error
        raise ValueError("malformed cursor") from exc
    if when.tzinfo is None or not isinstance(job_id, str) or text_problem(job_id) is not None:
        raise ValueError("malformed cursor")
    return when, job_id


async def list_jobs(
    conn: AsyncConnection,
    tenant: str,
    *,
    status: JobStatus | None = None,
    external_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[sa.RowMapping], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page."""
    query = sa.select(jobs).where(jobs.c.tenant == tenant)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if external_id is not None:
        query = query.where(jobs.c.external_id == external_id)
    if cursor is not None:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                jobs.c.created_at < created_at,
                sa.and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
            )
        )
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).mappings())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor


# --- compare-and-set transitions ------------------------------------------------------


def _failure_now(
    column: sa.Column[Any], to_status: JobStatus, values: Mapping[str, Any]
) -> sa.ColumnElement[Any] | None:
    """A failure field's value in ``to_status`` (not a failure status): the failure fields
    describe the job now, so they are cleared (a retry starts, a success, a cancel) unless
    a ``transcription.failed`` message is still to be sent, which carries them."""
    if to_status in (JobStatus.SUCCEEDED, JobStatus.CANCELED):
        return None
    if "webhook_event" in values:  # this very update sets the pending message, or none
        return column if values["webhook_event"] == FAILED_EVENT else None
    return sa.case((jobs.c.webhook_event == FAILED_EVENT, column), else_=sa.null())


async def transition(
    conn: AsyncConnection,
    job_id: str,
    *,
    from_status: JobStatus,
    to_status: JobStatus,
    attempt: int,
    actor: str,
    reason: str | None = None,
    detail: str | None = None,
    **values: Any,
) -> sa.RowMapping | None:
    """Move one job ``from_status -> to_status`` if it is still there at ``attempt``.

    Returns the updated job, or ``None`` when the job was not in ``from_status`` at
    ``attempt`` any more (another writer moved it, or a newer attempt owns it).
    Raises :class:`InvalidTransition` for a move the status machine forbids.

    The failure fields follow the status unless ``values`` sets them: ``reason`` and
    ``detail`` in a failure status, else cleared (:func:`_failure_now`).
    """
    check_transition(from_status, to_status)
    now = utcnow()
    values.setdefault("updated_at", now)
    if to_status in (JobStatus.SUCCEEDED, JobStatus.PERMAFAILED, JobStatus.CANCELED):
        values.setdefault("completed_at", now)
    if to_status not in IN_FLIGHT:
        values.setdefault("lease_expires_at", None)
    if to_status in FAILURE_STATUSES:
        values.setdefault("failure_reason", reason)
        values.setdefault("failure_detail", detail)
    else:
        values.setdefault("failure_reason", _failure_now(jobs.c.failure_reason, to_status, values))
        values.setdefault("failure_detail", _failure_now(jobs.c.failure_detail, to_status, values))
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == from_status, jobs.c.attempts == attempt)
        .values(status=to_status, **values)
        .returning(*jobs.c)
    )
    row = result.mappings().first()
    if row is not None:
        await _log_events(
            conn,
            [_event(job_id, from_status, to_status, row["attempts"], actor, now, reason, detail)],
        )
    return row


async def cancel(
    conn: AsyncConnection, job_id: str, *, actor: str, tenant: str | None = None
) -> sa.RowMapping | None:
    """A client's cancel: the job becomes CANCELED from whatever unfinished status it is in.

    The row is locked first, so a worker moving the job at the same moment cannot make
    the cancel miss it. A job that has finished once (``completed_at`` set) stays finished,
    also while a redelivery is under way (SEND_FAILED again): that raises
    :class:`InvalidTransition`, as does a terminal job. ``None``: there is no such job.
    """
    current = await get_job(conn, job_id, tenant, for_update=True)
    if current is None:
        return None
    status = JobStatus(current["status"])
    if current["completed_at"] is not None and status not in TERMINAL:
        raise InvalidTransition(JobStatus.SUCCEEDED, JobStatus.CANCELED)
    return await transition(
        conn,
        job_id,
        from_status=status,
        to_status=JobStatus.CANCELED,
        attempt=current["attempts"],
        actor=actor,
        detail="canceled by the client",
    )


async def renew_lease(
    conn: AsyncConnection, job_id: str, attempt: int, lease_seconds: float
) -> bool:
    """Extend an in-flight job's lease. ``False``: the lease is lost, stop working on it."""
    now = utcnow()
    result = await conn.execute(
        jobs.update()
        .where(
            jobs.c.id == job_id,
            jobs.c.attempts == attempt,
            jobs.c.status.in_(IN_FLIGHT),
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
    )
    return result.rowcount == 1


async def set_webhook_message(
    conn: AsyncConnection, job_id: str, attempt: int, event: str, message_id: str, payload: str
) -> bool:
    """Record the message a worker is about to send, before it sends it, so a retry after
    a crash sends the same content with the same ``webhook-id``. ``False``: lease lost."""
    result = await conn.execute(
        jobs.update()
        .where(
            jobs.c.id == job_id,
            jobs.c.attempts == attempt,
            jobs.c.status == JobStatus.PROCESSING,
        )
        .values(webhook_event=event, webhook_message_id=message_id, webhook_payload=payload)
    )
    return result.rowcount == 1


# --- the orchestrator's rounds --------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    attempt: int
    from_status: JobStatus
    tenant: str


async def count_in_flight(conn: AsyncConnection) -> int:
    return (
        await conn.scalar(
            sa.select(sa.func.count()).select_from(jobs).where(sa.text(sql_in(IN_FLIGHT)))
        )
        or 0
    )


@dataclass(frozen=True)
class StoppedJob:
    id: str
    triggers: int
    reason: str


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

    Each claimed job becomes TRIGGERED with its attempt counted and a lease. Concurrent
    claimers are serialised (an advisory transaction lock on PostgreSQL, the write lock
    of ``BEGIN IMMEDIATE`` on SQLite), so the in-flight count they act on is exact.
    Fairness (:func:`_pick_fairly`): tenants with due work take turns, one job each,
    oldest first within a tenant, from where the previous round stopped; a round reads
    only the jobs it takes, whatever the backlog or the history.

    The hard bound: a due job already triggered ``max_triggers`` times since it last
    started (:func:`triggers_since_start`) is not claimed but stopped, PERMAFAILED with
    the reason it had, and appended to ``stopped``. Every trigger passes here, so
    whatever the decisions after each attempt, no job is triggered more often.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
    in_flight, cursor = (await conn.execute(_IN_FLIGHT_AND_CURSOR)).one()
    room = min(max_in_flight - in_flight, batch_limit)
    if room <= 0:
        return []
    now = utcnow()
    candidates = await _pick_fairly(conn, room, now, cursor or "", actor)
    if max_triggers is not None:
        spent = await _stop_spent_jobs(conn, candidates, max_triggers, actor)
        candidates = [c for c in candidates if c["id"] not in {job.id for job in spent}]
        if stopped is not None:
            stopped.extend(spent)
    if not candidates:
        return []
    lease_until = now + timedelta(seconds=lease_seconds)
    await conn.execute(
        jobs.update()
        .where(jobs.c.id.in_([c["id"] for c in candidates]))
        .values(
            status=JobStatus.TRIGGERED,
            attempts=jobs.c.attempts + 1,
            lease_expires_at=lease_until,
            updated_at=now,
            failure_reason=_failure_now(jobs.c.failure_reason, JobStatus.TRIGGERED, {}),
            failure_detail=_failure_now(jobs.c.failure_detail, JobStatus.TRIGGERED, {}),
        )
    )
    claimed = [
        ClaimedJob(c["id"], c["attempts"] + 1, JobStatus(c["status"]), c["tenant"])
        for c in candidates
    ]
    await _log_events(
        conn,
        [_event(c.id, c.from_status, JobStatus.TRIGGERED, c.attempt, actor, now) for c in claimed],
    )
    return claimed


#: The ``runtime_settings`` row that holds the claim's place in the round-robin: the
#: tenant served last. Written by the claim rounds, under the claim lock.
CLAIM_CURSOR_SETTING = "claim_cursor"

_IN_FLIGHT_AND_CURSOR = sa.select(
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(sa.text(sql_in(IN_FLIGHT, "jobs.status")))
    .scalar_subquery(),
    sa.select(runtime_settings.c.value)
    .where(runtime_settings.c.name == CLAIM_CURSOR_SETTING)
    .scalar_subquery(),
)

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

#: The first ``:n`` tenants with a due job from the cursor on, wrapping around.
_ROUND_SQL = f"""
SELECT id FROM ({_HEADS_SQL.format(after=":cursor", upto_recursion="", upto="")}) AS a
UNION ALL
SELECT id FROM ({
    _HEADS_SQL.format(
        after="''", upto_recursion="AND t.tenant < :cursor", upto="AND t.tenant <= :cursor"
    )
}) AS b
LIMIT :n
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


async def _lock_claimable(
    conn: AsyncConnection, ids_sql: sa.TextClause, *order_by: sa.ColumnElement[Any]
) -> list[sa.RowMapping]:
    """The jobs whose ids ``ids_sql`` selects, still claimable, locked (PostgreSQL: the
    rows another transaction holds are skipped), in ``order_by``'s order."""
    query = sa.select(
        jobs.c.id,
        jobs.c.status,
        jobs.c.attempts,
        jobs.c.tenant,
        jobs.c.due_at,
        jobs.c.failure_reason,
        jobs.c.failure_detail,
        jobs.c.webhook_event,
    ).where(
        jobs.c.id.in_(ids_sql.columns(sa.column("id"))), sa.text(sql_in(CLAIMABLE, "jobs.status"))
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list((await conn.execute(query.order_by(*order_by))).mappings())


async def _pick_fairly(
    conn: AsyncConnection, room: int, now: datetime, cursor: str, actor: str
) -> list[sa.RowMapping]:
    """Up to ``room`` due jobs, locked, in the round-robin's order.

    The tenants with due work after the one served last (the cursor, wrapping around to
    the first) give one job each, their oldest, until ``room`` is filled: a round reads
    two index entries per tenant it visits. Only when every tenant with due work has had
    one do they give more, rank by rank (each tenant's second, then third...), oldest
    first within a rank. The cursor moves to the last tenant served, so with one slot
    freed per round tenants still take turns.
    """
    when = sa.bindparam("now", now, type_=UTCDateTime())
    # The round-robin's order, from the cursor on and wrapping around, as the database
    # orders names (its collation, which need not be Python's).
    wrapped = sa.case((jobs.c.tenant <= sa.bindparam("turn", cursor), 1), else_=0)
    heads = await _lock_claimable(
        conn,
        sa.text(_ROUND_SQL).bindparams(when, cursor=cursor, n=room),
        wrapped,
        jobs.c.tenant,
    )
    if not heads:
        return []
    last = heads[-1]["tenant"]
    if last != cursor:
        await set_runtime_setting(conn, CLAIM_CURSOR_SETTING, last, actor)
    picked = heads
    tenants = [job["tenant"] for job in heads]
    done = 1
    while len(picked) < room and tenants:
        k = -(-(room - len(picked)) // len(tenants))
        if conn.dialect.name == "postgresql":
            ranks = sa.text(_NEXT_RANKS_PG_SQL).bindparams(
                sa.bindparam("tenants", tenants, type_=sa.ARRAY(sa.String()))
            )
        else:
            ranks = sa.text(_NEXT_RANKS_SQLITE_SQL).bindparams(
                sa.bindparam("tenants", tenants, expanding=True)
            )
        more = await _lock_claimable(conn, ranks.bindparams(when, done=done, k=k))
        rank: dict[str, int] = {}
        ranked = []
        for job in sorted(more, key=lambda job: (job["tenant"], job["due_at"], job["id"])):
            rank[job["tenant"]] = rank.get(job["tenant"], done) + 1
            ranked.append((rank[job["tenant"]], job["due_at"], job["id"], job))
        picked += [job for *_order, job in sorted(ranked)[: room - len(picked)]]
        tenants = [tenant for tenant in tenants if rank.get(tenant) == done + k]
        done += k
    return picked


#: The ``job_events.reason`` of a trigger that never reached a worker.
TRIGGER_REFUSED = "TRIGGER_REFUSED"

#: Moves out of a terminal status: a client's redelivery (SUCCEEDED | PERMAFAILED ->
#: SEND_FAILED) or an operator's requeue (PERMAFAILED -> QUEUED, attempts back to 0).
_RESTARTS = (JobStatus.SUCCEEDED, JobStatus.PERMAFAILED)


async def triggers_since_start(conn: AsyncConnection, jobs_: Sequence[JobRow]) -> dict[str, int]:
    """How often each job was triggered since it last started: since it was enqueued,
    or since the latest redelivery or requeue (its ``attempts`` then is in the event log).

    ``attempts`` counts every claim, delivery retries included; a refused trigger and a
    shutdown's hand-back take theirs back, a requeue starts it at 0 again, a redelivery
    keeps it (so the API's ``attempts`` is the job's whole history).
    """
    ids = [job["id"] for job in jobs_]
    latest = (
        sa.select(sa.func.max(events.c.id))
        .where(events.c.job_id.in_(ids), events.c.from_status.in_(_RESTARTS))
        .group_by(events.c.job_id)
    )
    started: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(events.c.job_id, events.c.attempt).where(events.c.id.in_(latest))
            )
        ).all()
    )
    return {job["id"]: job["attempts"] - started.get(job["id"], 0) for job in jobs_}


async def _stop_spent_jobs(
    conn: AsyncConnection, candidates: Sequence[JobRow], max_triggers: int, actor: str
) -> list[StoppedJob]:
    """PERMAFAILED for each candidate already triggered ``max_triggers`` times."""
    maybe = [c for c in candidates if c["attempts"] >= max_triggers]
    if not maybe:  # the usual case: no query at all
        return []
    spent = []
    triggers = await triggers_since_start(conn, maybe)
    for job in maybe:
        if triggers[job["id"]] < max_triggers:
            continue
        reason = job["failure_reason"] or (
            FailureReason.WEBHOOK_FAILED
            if job["webhook_event"] == SUCCEEDED_EVENT
            else FailureReason.WORKER_LOST
        )
        detail = f"stopped after {triggers[job['id']]} triggers, the most a job gets"
        moved = await transition(
            conn,
            job["id"],
            from_status=JobStatus(job["status"]),
            to_status=JobStatus.PERMAFAILED,
            attempt=job["attempts"],
            actor=actor,
            reason=reason,
            detail=detail,
            failure_detail=f"{job['failure_detail']} ({detail})"
            if job["failure_detail"]
            else detail,
        )
        if moved is not None:
            spent.append(StoppedJob(job["id"], triggers[job["id"]], reason))
    return spent


async def return_to_queue(
    conn: AsyncConnection,
    job: ClaimedJob,
    detail: str,
    actor: str = "orchestrator",
    delay_seconds: float = 0.0,
) -> bool:
    """A trigger that never reached a worker: the job goes back, the attempt uncounted,
    due again after ``delay_seconds`` (the worker's Retry-After: not at once, or a full
    replica would be asked again and again).

    The job goes back to QUEUED whatever it was claimed from; the transcriber tells a
    delivery retry from a first run by the transcript it finds stored.

    The job's history records the first refusal of a run of them (``TRIGGERED -> QUEUED``,
    reason ``TRIGGER_REFUSED``); a later one, claimed from that QUEUED, removes its claim's
    event and is counted in the first one's detail, so refusals never grow the history.
    """
    moved = await transition(
        conn,
        job.id,
        from_status=JobStatus.TRIGGERED,
        to_status=JobStatus.QUEUED,
        attempt=job.attempt,
        actor=actor,
        reason=TRIGGER_REFUSED,
        detail=detail,
        attempts=job.attempt - 1,
        due_at=utcnow() + timedelta(seconds=delay_seconds),
    )
    if moved is None:
        return False
    await _coalesce_refusals(conn, job.id)
    return True


async def _coalesce_refusals(conn: AsyncConnection, job_id: str) -> None:
    """Fold ``[refusal, claim, refusal]`` at the end of a job's history into the first."""
    last = list(
        (
            await conn.execute(
                sa.select(events)
                .where(events.c.job_id == job_id)
                .order_by(events.c.id.desc())
                .limit(3)
            )
        ).mappings()
    )
    if len(last) < 3 or not (
        last[2]["reason"] == TRIGGER_REFUSED and last[0]["reason"] == TRIGGER_REFUSED
    ):
        return
    first, refusal = last[2], last[0]
    times = refusal_count(first["detail"]) + 1
    await conn.execute(events.delete().where(events.c.id.in_([last[0]["id"], last[1]["id"]])))
    await conn.execute(
        events.update()
        .where(events.c.id == first["id"])
        .values(detail=f"refused {times} times; last: {refusal['detail']}")
    )


def refusal_count(detail: str | None) -> int:
    """How many refused triggers one ``TRIGGER_REFUSED`` event stands for (its detail
    counts them once there are several; see :func:`_coalesce_refusals`)."""
    words = (detail or "").split(" ", 2)
    if len(words) == 3 and words[0] == "refused" and words[1].isdigit():
        return int(words[1])
    return 1


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
    """In-flight jobs whose lease expired: their worker is lost (``WORKER_LOST``).

    A job still to be transcribed is retried (FAILED, due after a backoff) while it has
    attempts left; out of attempts, it goes to SEND_FAILED with a ``transcription.failed``
    message for a worker to deliver. A job that was delivering a message counts the loss
    as a failed delivery, on the webhook schedule, and ends PERMAFAILED after the last.
    """
    now = utcnow()
    query = (
        sa.select(jobs)
        .where(jobs.c.status.in_(IN_FLIGHT), jobs.c.lease_expires_at < now)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    recovered = []
    for row in (await conn.execute(query)).mappings():
        detail = f"lease expired while {row['status']} (attempt {row['attempts']})"
        values: dict[str, Any] = {}
        if row["webhook_event"] is not None:
            decision = decide_delivery_retry(row["deliveries"] + 1, delivery_schedule)
            reason = row["failure_reason"] or FailureReason.WORKER_LOST
            values["deliveries"] = row["deliveries"] + 1
        else:
            decision = decide_retry(
                FailureReason.WORKER_LOST, row["attempts"], max_attempts, backoff_seconds
            )
            reason = FailureReason.WORKER_LOST
            if not decision.retried:
                decision = RetryDecision(JobStatus.SEND_FAILED, 0.0)
                values.update(
                    webhook_event=FAILED_EVENT,
                    webhook_message_id=new_message_id(),
                    webhook_payload=None,
                    deliveries=0,
                )
        moved = await transition(
            conn,
            row["id"],
            from_status=JobStatus(row["status"]),
            to_status=decision.status,
            attempt=row["attempts"],
            actor=actor,
            reason=reason,
            detail=detail,
            due_at=now + timedelta(seconds=decision.delay_seconds or 0),
            **values,
        )
        if moved is not None:
            recovered.append(RecoveredJob(row["id"], row["attempts"], decision.status))
    return recovered


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the next claimable job falls due (for the orchestrator's sleep)."""
    due: datetime | None = await conn.scalar(
        sa.select(sa.func.min(jobs.c.due_at)).where(jobs.c.status.in_(CLAIMABLE))
    )
    return due


# --- operators' views and commands ----------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    oldest_queued_at: datetime | None
    in_flight: int
    waiting_retry: int


async def queue_depth(conn: AsyncConnection) -> QueueDepth:
    """Counts of the unfinished jobs, read from the partial indexes that hold only them
    (never the history): still one row per job queued, so the orchestrator refreshes its
    gauges less often when this is slow."""
    claimable = await conn.execute(
        sa.select(jobs.c.status, sa.func.count(), sa.func.min(jobs.c.created_at))
        .where(sa.text(sql_in(CLAIMABLE, "jobs.status")))
        .group_by(jobs.c.status)
    )
    counts = {status: (count, oldest) for status, count, oldest in claimable}
    queued, oldest = counts.get(JobStatus.QUEUED, (0, None))
    retry = sum(counts.get(s, (0, None))[0] for s in (JobStatus.FAILED, JobStatus.SEND_FAILED))
    return QueueDepth(queued, oldest, await count_in_flight(conn), retry)


async def most_triggers(conn: AsyncConnection, max_triggers: int) -> int:
    """The most triggers any job not yet finished had since it last started (0: none).

    A cheap maximum of ``attempts`` over the unfinished jobs (from the partial indexes
    that hold only them); only the few jobs above ``max_triggers`` (redelivered ones, or
    ones something pushed past the claim's check) have their start looked up.
    """
    most = 0
    high: list[sa.RowMapping] = []
    for statuses in (CLAIMABLE, IN_FLIGHT):
        unfinished = sa.text(sql_in(statuses, "jobs.status"))
        low, above = (
            await conn.execute(
                sa.select(
                    sa.func.max(sa.case((jobs.c.attempts <= max_triggers, jobs.c.attempts))),
                    sa.func.count(sa.case((jobs.c.attempts > max_triggers, 1))),
                ).where(unfinished)
            )
        ).one()
        most = max(most, low or 0)
        if above:
            high += (
                await conn.execute(
                    sa.select(jobs.c.id, jobs.c.attempts)
                    .where(unfinished, jobs.c.attempts > max_triggers)
                    .order_by(jobs.c.attempts.desc())
                    .limit(100)
                )
            ).mappings()
    if high:
        most = max(most, *(await triggers_since_start(conn, high)).values())
    return most


@dataclass(frozen=True)
class Stats:
    since: datetime
    by_status: dict[str, int]
    by_failure_reason: dict[str, int]


async def stats(conn: AsyncConnection, since: datetime) -> Stats:
    """Jobs created or updated since ``since``, by status and by failure reason."""
    recent = sa.or_(jobs.c.updated_at >= since, jobs.c.created_at >= since)
    by_status: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(jobs.c.status, sa.func.count()).where(recent).group_by(jobs.c.status)
            )
        ).all()
    )
    by_reason: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(jobs.c.failure_reason, sa.func.count())
                .where(recent, jobs.c.failure_reason.is_not(None))
                .group_by(jobs.c.failure_reason)
            )
        ).all()
    )
    return Stats(since, by_status, by_reason)


async def requeue_candidates(
    conn: AsyncConnection,
    *,
    since: datetime,
    reasons: Iterable[str] | None = None,
    include_download_errors: bool = False,
    limit: int | None = None,
) -> list[sa.RowMapping]:
    """PERMAFAILED jobs that ended since ``since`` and an operator may send back."""
    query = sa.select(jobs).where(
        jobs.c.status == JobStatus.PERMAFAILED, jobs.c.completed_at >= since
    )
    if reasons:
        query = query.where(jobs.c.failure_reason.in_(list(reasons)))
    if not include_download_errors:
        client_side = [r for r in FailureReason if r.needs_client]
        query = query.where(
            sa.or_(jobs.c.failure_reason.is_(None), jobs.c.failure_reason.not_in(client_side))
        )
    query = query.order_by(jobs.c.completed_at, jobs.c.id)
    if limit is not None:
        query = query.limit(limit)
    return list((await conn.execute(query)).mappings())


async def requeue(conn: AsyncConnection, job: JobRow, actor: str) -> bool:
    """PERMAFAILED -> QUEUED with a fresh set of attempts, recorded in the event log."""
    moved = await transition(
        conn,
        job["id"],
        from_status=JobStatus.PERMAFAILED,
        to_status=JobStatus.QUEUED,
        attempt=job["attempts"],
        actor=actor,
        reason=None,
        detail=f"requeued after {job['failure_reason']}",
        attempts=0,
        deliveries=0,
        due_at=utcnow(),
        completed_at=None,
        webhook_event=None,
        webhook_message_id=None,
        webhook_payload=None,
        delivered_at=None,
    )
    return moved is not None


async def request_redelivery(
    conn: AsyncConnection, job: JobRow, actor: str
) -> sa.RowMapping | None:
    """A finished job back into the delivery queue (SEND_FAILED, due now, deliveries reset).

    The message keeps its ``webhook-id``; a job that never had one gets its first. The job
    keeps its ``completed_at``: it is finished, and a cancel is refused (:func:`cancel`).
    """
    has_transcript = await get_transcript(conn, job["id"]) is not None
    event = SUCCEEDED_EVENT if has_transcript else FAILED_EVENT
    same = job["webhook_event"] == event and job["webhook_message_id"] is not None
    return await transition(
        conn,
        job["id"],
        from_status=JobStatus(job["status"]),
        to_status=JobStatus.SEND_FAILED,
        attempt=job["attempts"],
        actor=actor,
        reason=job["failure_reason"],
        detail="redelivery requested",
        failure_detail=job["failure_detail"],
        webhook_event=event,
        webhook_message_id=job["webhook_message_id"] if same else new_message_id(),
        webhook_payload=job["webhook_payload"] if same else None,
        deliveries=0,
        due_at=utcnow(),
    )


# --- transcripts and chunks -----------------------------------------------------------


async def save_transcript(conn: AsyncConnection, job_id: str, content: dict[str, Any]) -> None:
    await conn.execute(transcripts.delete().where(transcripts.c.job_id == job_id))
    await conn.execute(
        transcripts.insert().values(job_id=job_id, content=content, created_at=utcnow())
    )


async def get_transcript(conn: AsyncConnection, job_id: str) -> dict[str, Any] | None:
    return await conn.scalar(sa.select(transcripts.c.content).where(transcripts.c.job_id == job_id))


async def save_chunk(
    conn: AsyncConnection,
    job_id: str,
    index: int,
    start: float,
    end: float,
    result: dict[str, Any],
) -> None:
    await conn.execute(chunks.delete().where(chunks.c.job_id == job_id, chunks.c.index == index))
    await conn.execute(
        chunks.insert().values(
            job_id=job_id,
            index=index,
            start=start,
            end=end,
            result=result,
            created_at=utcnow(),
        )
    )


async def saved_chunks(conn: AsyncConnection, job_id: str) -> list[sa.RowMapping]:
    result = await conn.execute(
        sa.select(chunks).where(chunks.c.job_id == job_id).order_by(chunks.c.index)
    )
    return list(result.mappings())


# --- runtime settings -----------------------------------------------------------------

#: Overrides MAX_CONCURRENT_TRANSCRIPTION_JOBS (``transcription limit set``), read each round.
LIMIT_SETTING = "max_concurrent_transcription_jobs"


async def get_runtime_setting(conn: AsyncConnection, name: str) -> str | None:
    return await conn.scalar(
        sa.select(runtime_settings.c.value).where(runtime_settings.c.name == name)
    )


async def set_runtime_setting(conn: AsyncConnection, name: str, value: str, actor: str) -> None:
    now = utcnow()
    updated = await conn.execute(
        runtime_settings.update()
        .where(runtime_settings.c.name == name)
        .values(value=value, updated_at=now, updated_by=actor)
    )
    if updated.rowcount == 0:
        await conn.execute(
            runtime_settings.insert().values(
                name=name, value=value, updated_at=now, updated_by=actor
            )
        )


async def delete_runtime_setting(conn: AsyncConnection, name: str) -> None:
    await conn.execute(runtime_settings.delete().where(runtime_settings.c.name == name))
