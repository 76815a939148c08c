"""Jobs read back: one by id, and a tenant's jobs page by page."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.job import Job
from transcription_core.repository.tables import jobs
from transcription_core.status import JobStatus
from transcription_core.storable import text_problem


async def get_job(
    conn: AsyncConnection, job_id: str, tenant: str | None = None, *, for_update: bool = False
) -> Job | None:
    """One job; ``for_update`` locks its row until the transaction ends (PostgreSQL; on
    SQLite the transaction already holds the write lock)."""
    query = sa.select(jobs).where(jobs.c.id == job_id)
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Job.from_row(row)


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
) -> tuple[list[Job], str | None]:
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
    page = [Job.from_row(row) for row in (await conn.execute(query)).mappings()]
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
    return page, next_cursor
