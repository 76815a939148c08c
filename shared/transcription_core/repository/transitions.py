"""Status changes: a lifecycle :class:`~job.Change` applied as one compare-and-set.

``UPDATE jobs SET <the change's columns> WHERE id = :id AND status = :expected AND
attempts = :attempts``, where ``expected`` is the job's status as the change saw it and
the status machine allows the move from it (``Change.expected_status``, from
``status.allowed_from``). No row back means another writer moved the job first: nothing
is overwritten, nothing logged. A row back appends the change's event to the job's
history in the same transaction. What a change writes is decided in ``lifecycle.py``;
the functions here read what a decision needs and apply it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import lifecycle
from transcription_core.job import Change, Job, WebhookEvent
from transcription_core.models import utcnow
from transcription_core.repository.history import event_columns, log_events
from transcription_core.repository.reads import get_job
from transcription_core.repository.results import has_transcript
from transcription_core.repository.runtime import set_runtime_setting
from transcription_core.repository.tables import events, jobs, runtime_settings
from transcription_core.status import IN_FLIGHT, JobStatus


def _compare_and_set(columns: Iterable[str]) -> sa.Update:
    """The one statement of every status change: the ``columns`` set where the job still
    is as the change saw it (parameters: :func:`_parameters`)."""
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("cas_id"),
            jobs.c.status == sa.bindparam("cas_status"),
            jobs.c.attempts == sa.bindparam("cas_attempts"),
        )
        .values({name: sa.bindparam(f"new_{name}") for name in ("status", *columns)})
    )


def _parameters(change: Change) -> dict[str, object]:
    return {
        "cas_id": change.job.id,
        "cas_status": change.expected_status,
        "cas_attempts": change.job.attempts,
        "new_status": change.to_status,
        **{f"new_{name}": value for name, value in change.writes.items()},
    }


async def apply(conn: AsyncConnection, change: Change, actor: str) -> Job | None:
    """Apply ``change`` by ``actor``: the job as it is now, or ``None`` if the job is no
    longer where the change expects it. :class:`InvalidTransition` for a move the status
    machine forbids."""
    statement = _compare_and_set(change.writes).returning(*jobs.c)
    row = (await conn.execute(statement, _parameters(change))).mappings().first()
    if row is None:
        return None
    await log_events(conn, [change.event], actor)
    return Job.from_row(row)


async def apply_locked(
    conn: AsyncConnection,
    changes: Sequence[Change],
    actor: str,
    *,
    setting: tuple[str, str] | None = None,
) -> None:
    """Apply ``changes`` to jobs this transaction holds locked as the changes saw them
    (the claim's batch), so each applies, and write the runtime ``setting`` (name, value;
    the claim's cursor) with them: per set of columns written, on PostgreSQL one statement
    that updates the jobs and appends their events (each change's values as arrays), the
    setting in the first; elsewhere one compare-and-set per job and one insert of the
    events."""
    by_columns: dict[tuple[str, ...], list[Change]] = {}
    for change in changes:
        by_columns.setdefault(tuple(change.writes), []).append(change)
    if conn.dialect.name == "postgresql" and by_columns:
        for columns, group in by_columns.items():
            statement = _apply_all_pg(columns, with_setting=setting is not None)
            await conn.execute(statement, _apply_all_pg_values(group, actor, setting))
            setting = None
        return
    if setting is not None:
        await set_runtime_setting(conn, *setting, actor)
    for columns, group in by_columns.items():
        await conn.execute(_compare_and_set(columns), [_parameters(c) for c in group])
    await log_events(conn, [change.event for change in changes], actor)


#: The columns of ``jobs`` a compare-and-set reads, as ``_apply_all_pg``'s arrays name them.
_CAS_COLUMNS = {"cas_id": "id", "cas_status": "status", "cas_attempts": "attempts"}
#: The columns of ``job_events`` an event fills (``event_columns``), but the actor.
_EVENT_COLUMNS = ("job_id", "from_status", "to_status", "reason", "detail", "attempt", "created_at")


@functools.lru_cache(maxsize=64)
def _apply_all_pg(columns: tuple[str, ...], *, with_setting: bool) -> sa.TextClause:
    """``_compare_and_set`` and ``log_events`` for a group of changes that write
    ``columns`` in one statement: ``UPDATE jobs ... FROM unnest(<one array per
    parameter>)`` and an insert of the events of the rows it updated; and, ``with_setting``,
    a runtime setting's upsert. Built once per set of columns (the claim runs it every
    round); the values are :func:`_apply_all_pg_values`."""
    updates = ("status", *columns)
    job_columns = {**_CAS_COLUMNS, **{f"new_{name}": name for name in updates}}
    job_binds, job_arrays = _unnest_arguments(
        {name: jobs.c[column].type for name, column in job_columns.items()}
    )
    event_binds, event_arrays = _unnest_arguments(
        {f"ev_{name}": events.c[name].type for name in _EVENT_COLUMNS}
    )
    binds = [*job_binds, *event_binds]
    sets = ", ".join(f"{name} = v.new_{name}" for name in updates)
    upsert = ""
    if with_setting:
        upsert = """setting AS (
            INSERT INTO runtime_settings (name, value, updated_at, updated_by)
            VALUES (:setting_name, :setting_value, :setting_at, :actor)
            ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
        ),"""
        binds.append(sa.bindparam("setting_at", type_=runtime_settings.c.updated_at.type))
    sql = f"""
        WITH {upsert} updated AS (
            UPDATE jobs SET {sets}
            FROM unnest({job_arrays}) AS v({", ".join(job_columns)})
            WHERE jobs.id = v.cas_id AND jobs.status = v.cas_status
              AND jobs.attempts = v.cas_attempts
            RETURNING jobs.id
        )
        INSERT INTO job_events
            (job_id, from_status, to_status, reason, detail, attempt, actor, created_at)
        SELECT e.ev_job_id, e.ev_from_status, e.ev_to_status, e.ev_reason, e.ev_detail,
               e.ev_attempt, :actor, e.ev_created_at
        FROM unnest({event_arrays}) AS e({", ".join(f"ev_{name}" for name in _EVENT_COLUMNS)})
        JOIN updated ON updated.id = e.ev_job_id
    """
    return sa.text(sql).bindparams(*binds)


def _apply_all_pg_values(
    group: Sequence[Change], actor: str, setting: tuple[str, str] | None
) -> dict[str, object]:
    """The values of :func:`_apply_all_pg`'s statement for ``group``: one list per
    parameter, the changes' values in order."""
    params = [_parameters(change) for change in group]
    values: dict[str, object] = {name: [p[name] for p in params] for name in params[0]}
    event_rows = [event_columns(change.event) for change in group]
    values |= {f"ev_{name}": [row[name] for row in event_rows] for name in _EVENT_COLUMNS}
    values["actor"] = actor
    if setting is not None:
        values |= {"setting_name": setting[0], "setting_value": setting[1]}
        values["setting_at"] = group[0].at
    return values


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _unnest_arguments(
    arrays: dict[str, sa.types.TypeEngine[Any]],
) -> tuple[list[sa.BindParameter[Any]], str]:
    """One array parameter per name, of its column's type, and ``unnest``'s arguments:
    each parameter cast to that type's array."""
    binds = [sa.bindparam(name, type_=sa.ARRAY(item)) for name, item in arrays.items()]
    casts = ", ".join(
        f"CAST(:{name} AS {item.compile(dialect=_POSTGRESQL)}[])" for name, item in arrays.items()
    )
    return binds, casts


# --- the worker's ---------------------------------------------------------------------


async def start(
    conn: AsyncConnection, job_id: str, attempt: int, lease_seconds: float, actor: str
) -> Job | None:
    """A worker takes the trigger of ``attempt``: the job PROCESSING, or ``None`` when it
    is no longer TRIGGERED at that attempt."""
    job = await get_job(conn, job_id)
    if job is None or job.status != JobStatus.TRIGGERED or job.attempts != attempt:
        return None
    return await apply(conn, lifecycle.started(job, lease_seconds, utcnow()), actor)


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
    conn: AsyncConnection,
    job_id: str,
    attempt: int,
    event: WebhookEvent,
    message_id: str,
    payload: str,
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


# --- the client's and the operators' --------------------------------------------------


async def cancel(
    conn: AsyncConnection, job_id: str, *, actor: str, tenant: str | None = None
) -> Job | None:
    """A client's cancel (``lifecycle.cancelled``); ``None``: there is no such job.

    The row is locked first, so a worker moving the job at the same moment cannot make
    the cancel miss it. A finished job raises :class:`InvalidTransition`.
    """
    current = await get_job(conn, job_id, tenant, for_update=True)
    if current is None:
        return None
    return await apply(conn, lifecycle.cancelled(current, utcnow()), actor)


async def request_redelivery(conn: AsyncConnection, job: Job, actor: str) -> Job | None:
    """A finished job back into the delivery queue (``lifecycle.redelivered``): the
    stored transcript if there is one, else the failure. ``None``: the job moved
    meanwhile; a job not finished raises :class:`InvalidTransition`."""
    change = lifecycle.redelivered(job, await has_transcript(conn, job.id), utcnow())
    return await apply(conn, change, actor)


async def requeue(conn: AsyncConnection, job: Job, actor: str) -> bool:
    """PERMAFAILED -> QUEUED with a fresh set of attempts (``lifecycle.requeued``)."""
    return await apply(conn, lifecycle.requeued(job, utcnow()), actor) is not None
