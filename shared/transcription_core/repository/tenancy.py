"""Tenants, their API keys (stored as SHA-256) and their webhook secrets.

Credentials are rotated without a gap: a tenant may hold several API keys (a new one is
added, the old ones revoked once the client has switched), and a rotated webhook secret
keeps signing, next to the new one, until the end of the overlap the operator chose.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.errors import TenantExists
from transcription_core.models import utcnow
from transcription_core.repository.tables import api_keys, tenants

API_KEY_PREFIX = "tsk_"
#: How much of a key is kept in clear (``api_keys.key_prefix``), to name it in a listing.
KEY_PREFIX_CHARS = 12


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
            key_prefix=api_key[:KEY_PREFIX_CHARS],
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


async def tenant_webhook_secrets(
    conn: AsyncConnection, tenant: str, now: datetime | None = None
) -> list[str]:
    """The secrets a message to ``tenant`` is signed with: the current one, then the one
    before the last rotation while its overlap lasts. Empty for an unknown tenant."""
    t = tenants.c
    row = (
        await conn.execute(
            sa.select(
                t.webhook_secret, t.previous_webhook_secret, t.previous_webhook_secret_expires_at
            ).where(t.name == tenant)
        )
    ).first()
    if row is None:
        return []
    current, previous, until = row
    overlapping = previous is not None and until is not None and until > (now or utcnow())
    return [current, previous] if overlapping else [current]


@dataclass(frozen=True)
class RotatedSecret:
    tenant: str
    webhook_secret: str
    #: Until when the previous secret signs too (``None``: it stopped at once).
    previous_valid_until: datetime | None


async def rotate_webhook_secret(
    conn: AsyncConnection, tenant: str, overlap: timedelta
) -> RotatedSecret | None:
    """A new webhook secret for ``tenant``; the current one signs too for ``overlap`` (none:
    it stops at once). A previous secret still in its overlap is dropped: only the two
    newest ever sign. ``None`` if there is no such tenant."""
    now = utcnow()
    secret = new_webhook_secret()
    until = now + overlap if overlap > timedelta(0) else None
    t = tenants.c
    updated = await conn.execute(
        tenants.update()
        .where(t.name == tenant)
        .values(
            previous_webhook_secret=t.webhook_secret if until else None,
            previous_webhook_secret_expires_at=until,
            webhook_secret=secret,
        )
    )
    if updated.rowcount == 0:
        return None
    return RotatedSecret(tenant, secret, until)


async def tenant_exists(conn: AsyncConnection, tenant: str) -> bool:
    found = await conn.scalar(sa.select(tenants.c.name).where(tenants.c.name == tenant))
    return found is not None


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is kept of an API key: its first characters, never the key."""

    prefix: str
    created_at: datetime
    revoked_at: datetime | None


async def list_api_keys(conn: AsyncConnection, tenant: str) -> list[ApiKeyInfo]:
    """``tenant``'s keys, oldest first, revoked ones included."""
    k = api_keys.c
    rows = await conn.execute(
        sa.select(k.key_prefix, k.created_at, k.revoked_at)
        .where(k.tenant == tenant)
        .order_by(k.created_at, k.key_prefix)
    )
    return [ApiKeyInfo(*row) for row in rows]


async def revoke_api_keys(
    conn: AsyncConnection, tenant: str, *, prefix: str | None = None, keep: str | None = None
) -> int:
    """Revoke ``tenant``'s keys that are not revoked yet: those starting with ``prefix``
    (``None``: all; a whole key: that key), except the key ``keep``. How many were revoked."""
    k = api_keys.c
    query = api_keys.update().where(k.tenant == tenant, k.revoked_at.is_(None))
    if prefix is not None:
        query = query.where(k.key_prefix == prefix[:KEY_PREFIX_CHARS])
        if len(prefix) > KEY_PREFIX_CHARS:  # a whole key: that key only
            query = query.where(k.key_hash == hash_api_key(prefix))
    if keep is not None:
        query = query.where(k.key_hash != hash_api_key(keep))
    revoked = await conn.execute(query.values(revoked_at=utcnow()))
    return revoked.rowcount


async def list_tenants(conn: AsyncConnection) -> list[str]:
    return list(await conn.scalars(sa.select(tenants.c.name).order_by(tenants.c.name)))
