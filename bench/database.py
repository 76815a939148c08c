"""A scratch PostgreSQL database per benchmark: ``bench_<random>``, migrated, dropped at
the end. The admin connection is ``BENCH_DATABASE_URL``, else ``TEST_DATABASE_URL``, else
postgres on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from transcription_core import migrate
from transcription_core.db import asyncpg_dsn

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
)


def database_name(url: str) -> str:
    return str(make_url(url).database)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(sql: str, wait_seconds: float = 60.0) -> None:
    """Run ``sql`` on the admin database, waiting (up to ``wait_seconds``) for PostgreSQL
    to accept connections: a shared server may be restarting."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(ADMIN_URL), timeout=10)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(prefix: str = "bench") -> Iterator[str]:
    """A new, migrated database ``<prefix>_<random>``, dropped on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = with_database(ADMIN_URL, name)
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def sample_every_second(
    database_url: str,
    stop: asyncio.Event,
    t0: float,
    samples: list[dict[str, Any]],
    read: Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]],
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Until ``stop``: every second, ``read`` on one connection, appended to ``samples``
    with its time since ``t0`` (or the error, reconnecting next time: others' fault
    drills restart PostgreSQL on a shared machine). ``before`` runs first each second."""
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        started = time.monotonic()
        if before is not None:
            await before()
        try:
            if conn is None:
                conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=5)
            sample = await read(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            samples.append({"t": round(started - t0, 2), "error": repr(exc)[:200]})
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            conn = None
        else:
            samples.append({"t": round(started - t0, 2), **sample})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - (time.monotonic() - started)))
    if conn is not None:
        await conn.close()
