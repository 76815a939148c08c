"""Every SQL statement about the ``transcriber_replicas`` table: each transcriber process
reports in it what it can take and what it runs; the orchestrator reads it to trigger
no more than there is room for (``orchestrator_service.dispatch``).

Like ``repository.py``, functions take an open connection and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.models import TranscriberReplica, utcnow
from transcription_core.repository.tables import upsert

replicas = cast(sa.Table, TranscriberReplica.__table__)


@dataclass(frozen=True)
class ReplicaState:
    """What one replica reported, in its row or in a trigger's answer."""

    id: str
    url: str
    slots: int
    running: int
    accepting: bool
    model_saturated: bool
    version: int
    heartbeat_at: datetime | None = None


class ReplicaAnswer(BaseModel):
    """A transcriber's answer to a trigger (202 or 503): itself just after it took or
    refused the job, at least as fresh as its row (``version`` orders the two)."""

    replica: str
    slots: int
    running: int
    accepting: bool
    model_saturated: bool
    version: int

    @classmethod
    def of(cls, state: ReplicaState) -> ReplicaAnswer:
        return cls(
            replica=state.id,
            slots=state.slots,
            running=state.running,
            accepting=state.accepting,
            model_saturated=state.model_saturated,
            version=state.version,
        )

    def state(self) -> ReplicaState:
        """The state it says, without a URL or heartbeat (those come from the row)."""
        return ReplicaState(
            self.replica,
            "",
            self.slots,
            self.running,
            self.accepting,
            self.model_saturated,
            self.version,
        )


async def report(conn: AsyncConnection, state: ReplicaState, started_at: datetime) -> None:
    """Insert or update the replica's row, its heartbeat now."""
    values = {
        "url": state.url,
        "slots": state.slots,
        "running": state.running,
        "accepting": state.accepting,
        "model_saturated": state.model_saturated,
        "version": state.version,
        "heartbeat_at": utcnow(),
    }
    await conn.execute(
        upsert(conn, replicas, {"id": state.id}, values, on_insert={"started_at": started_at})
    )


async def remove(conn: AsyncConnection, replica_id: str) -> None:
    await conn.execute(replicas.delete().where(replicas.c.id == replica_id))


async def live(conn: AsyncConnection, ttl_seconds: float) -> list[ReplicaState]:
    """The replicas heard from within ``ttl_seconds``."""
    since = utcnow() - timedelta(seconds=ttl_seconds)
    rows = await conn.execute(
        sa.select(replicas).where(replicas.c.heartbeat_at > since).order_by(replicas.c.id)
    )
    return [
        ReplicaState(
            id=row.id,
            url=row.url,
            slots=row.slots,
            running=row.running,
            accepting=row.accepting,
            model_saturated=row.model_saturated,
            version=row.version,
            heartbeat_at=row.heartbeat_at,
        )
        for row in rows
    ]


async def prune(conn: AsyncConnection, older_than_seconds: float) -> int:
    """Delete the rows of replicas not heard from for ``older_than_seconds`` (killed
    outright: a replica that stops cleanly deletes its own)."""
    before = utcnow() - timedelta(seconds=older_than_seconds)
    result = await conn.execute(replicas.delete().where(replicas.c.heartbeat_at < before))
    return int(result.rowcount or 0)
