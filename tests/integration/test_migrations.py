"""Migrations bring an empty PostgreSQL and an empty SQLite file to the models' schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from transcription_core import migrate
from transcription_core.db import create_engine
from transcription_core.models import Base


async def _diff(url: str) -> list:
    engine = create_engine(url, "migration-test")
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


def _round_trip(url: str) -> None:
    migrate.upgrade(url)
    migrate.downgrade(url, "base")
    migrate.upgrade(url)


@pytest.fixture
def empty_pg(pg_template: str, pg_url: str) -> str:
    migrate.downgrade(pg_url, "base")
    return pg_url


def test_postgres_upgrade_downgrade_upgrade_matches_the_models(empty_pg: str) -> None:
    _round_trip(empty_pg)
    assert asyncio.run(_diff(empty_pg)) == []


def test_sqlite_upgrade_downgrade_upgrade_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    _round_trip(url)
    assert asyncio.run(_diff(url)) == []
