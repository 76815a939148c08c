"""Tenants, their API keys (stored as SHA-256) and their webhook secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.errors import TenantExists
from transcription_core.models import utcnow
from transcription_core.repository.tables import api_keys, tenants

API_KEY_PREFIX = "tsk_"


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
    tenant: str | None = await conn.scalar(
        sa.select(api_keys.c.tenant).where(
            api_keys.c.key_hash == hash_api_key(api_key), api_keys.c.revoked_at.is_(None)
        )
    )
    return tenant


async def tenant_webhook_secret(conn: AsyncConnection, tenant: str) -> str | None:
    secret: str | None = await conn.scalar(
        sa.select(tenants.c.webhook_secret).where(tenants.c.name == tenant)
    )
    return secret


async def list_tenants(conn: AsyncConnection) -> list[str]:
    return list(await conn.scalars(sa.select(tenants.c.name).order_by(tenants.c.name)))
