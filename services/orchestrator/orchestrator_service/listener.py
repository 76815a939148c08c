"""Wake the orchestrator at once on PostgreSQL: ``LISTEN`` for the jobs table's NOTIFY.

The jobs table's UPDATE trigger notifies ``transcription_jobs`` when a job becomes
claimable or leaves flight, and the enqueue service notifies it after committing new jobs
(``repository.NOTIFY_CHANNEL``); a transcriber whose slot freed up notifies it with the
payload ``repository.SLOT_FREED``, passed on to ``on_notify`` (the others' is empty).
LISTEN needs a connection of its own (a pooled one would lose the subscription), so this
opens a plain asyncpg connection, reconnects when it drops, and meanwhile the
orchestrator polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from transcription_core.db import asyncpg_dsn
from transcription_core.repository import NOTIFY_CHANNEL as CHANNEL

log = logging.getLogger(__name__)


async def listen_forever(
    database_url: str, on_notify: Callable[[str], None], reconnect_seconds: float = 2.0
) -> None:
    dsn = asyncpg_dsn(database_url)
    while True:
        try:
            conn = await asyncpg.connect(
                dsn, server_settings={"application_name": "transcription-orchestrator-listen"}
            )
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN connection failed, polling meanwhile: %s", exc)
            await asyncio.sleep(reconnect_seconds)
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
        try:
            await conn.add_listener(
                CHANNEL, lambda _conn, _pid, _channel, payload: on_notify(payload)
            )
            on_notify("")  # anything queued while we were not listening
            await lost.wait()
            log.warning("LISTEN connection lost, reconnecting")
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN failed: %s", exc)
        finally:
            if not conn.is_closed():
                await conn.close()
        await asyncio.sleep(reconnect_seconds)
