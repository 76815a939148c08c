"""The job store's tables as SQLAlchemy Core handles, for the repository's statements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core import models

jobs = cast(sa.Table, models.Job.__table__)
events = cast(sa.Table, models.JobEvent.__table__)
tenants = cast(sa.Table, models.Tenant.__table__)
api_keys = cast(sa.Table, models.ApiKey.__table__)
transcripts = cast(sa.Table, models.Transcript.__table__)
chunks = cast(sa.Table, models.JobChunk.__table__)
runtime_settings = cast(sa.Table, models.RuntimeSetting.__table__)


def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    on_insert: Mapping[str, Any] | None = None,
) -> sa.Insert:
    """One statement (PostgreSQL or SQLite) that inserts the row of ``key`` with
    ``values`` (and ``on_insert``), or sets ``values`` on the row already there."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values({**key, **(on_insert or {}), **values})
    return statement.on_conflict_do_update(index_elements=list(key), set_=dict(values))
