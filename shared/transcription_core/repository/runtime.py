"""Settings an operator changes without a redeploy, read by the services every round;
and the store's liveness probe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.models import utcnow
from transcription_core.repository.tables import runtime_settings

#: Overrides MAX_CONCURRENT_TRANSCRIPTION_JOBS (``transcription limit set``), read each round.
LIMIT_SETTING = "max_concurrent_transcription_jobs"
#: The override ``transcription limit pause`` replaced (none: the environment's value), put
#: back by ``limit resume``.
LIMIT_BEFORE_PAUSE_SETTING = "max_concurrent_transcription_jobs_before_pause"


@dataclass(frozen=True)
class RuntimeValue:
    name: str
    value: str
    updated_at: datetime
    updated_by: str


async def get_runtime_setting(conn: AsyncConnection, name: str) -> str | None:
    value: str | None = await conn.scalar(
        sa.select(runtime_settings.c.value).where(runtime_settings.c.name == name)
    )
    return value


async def runtime_setting(conn: AsyncConnection, name: str) -> RuntimeValue | None:
    """The setting with who set it and when, or ``None`` if it is not set."""
    t = runtime_settings.c
    row = (
        await conn.execute(
            sa.select(t.name, t.value, t.updated_at, t.updated_by).where(t.name == name)
        )
    ).first()
    return None if row is None else RuntimeValue(*row)


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


async def ping(conn: AsyncConnection) -> None:
    """A round trip to the store (a readiness probe); raises if it cannot be reached."""
    await conn.execute(sa.select(1))
