"""Databases for the drills: a migrated template with two tenants, a fresh copy per drill.

The template is built once per run with the operator's own commands (``transcription
migrate``, ``transcription tenants create NAME --json``); each drill gets ``CREATE
DATABASE ... TEMPLATE`` and drops it with ``WITH (FORCE)`` when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

from testkit.procs import ROOT
from transcription_core.db import asyncpg_dsn

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TENANTS = ("org-drill-a", "org-drill-b")


def admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def dsn(url: str) -> str:
    return asyncpg_dsn(url)


@dataclass(frozen=True)
class TenantKeys:
    tenant: str
    api_key: str
    webhook_secret: str


async def admin(sql: str, url: str | None = None) -> None:
    conn = await asyncpg.connect(dsn(url or admin_url()), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _cli(args: list[str], database_url: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "transcription_cli", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"transcription {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


class Template:
    """``faults_tmpl_<pid>``: migrated, with the drill tenants; dropped by ``close()``."""

    def __init__(self) -> None:
        self.name = f"faults_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.tenants: list[TenantKeys] = []

    async def create(self) -> None:
        await admin(f'DROP DATABASE IF EXISTS "{self.name}"')
        await admin(f'CREATE DATABASE "{self.name}"')
        url = with_database(admin_url(), self.name)
        await asyncio.to_thread(_cli, ["migrate"], url)
        for tenant in TENANTS:
            out = await asyncio.to_thread(_cli, ["tenants", "create", tenant, "--json"], url)
            data = json.loads(out)
            self.tenants.append(TenantKeys(data["tenant"], data["api_key"], data["webhook_secret"]))

    async def fresh(self, label: str) -> str:
        """A new database copied from the template; returns its SQLAlchemy URL."""
        name = f"faults_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        for attempt in range(20):
            try:
                await admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
                break
            except asyncpg.ObjectInUseError:  # someone still connected to the template
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            raise RuntimeError(f"could not copy the template {self.name}")
        return with_database(admin_url(), name)

    async def close(self) -> None:
        await admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def drop(url: str) -> None:
    name = make_url(url).database
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
