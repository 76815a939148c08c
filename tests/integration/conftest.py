"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service.app import create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_tenant
from testkit.asgi import serve_app


@pytest.fixture
async def tenant_client(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The enqueue API on loopback, and a client that sends the key of tenant org-test."""
    tenant = await make_tenant(engine)
    settings = EnqueueSettings(database_url=database_url)
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {tenant.api_key}"}
        ) as http,
    ):
        yield http
