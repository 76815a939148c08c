"""What the shared handlers make of errors the job store raises about a request's values."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from servers import serve_app
from transcription_core.db import asyncpg_dsn, create_engine
from transcription_core.http import install_problem_handlers


@pytest.mark.postgres
async def test_a_value_the_store_refuses_is_a_client_error_not_an_outage(pg_url: str) -> None:
    """SQLSTATE class 22 (data exception) and arguments the driver cannot encode are about
    the request's values: 422, never "the job store is unavailable; retry shortly"."""
    engine = create_engine(pg_url, "transcription-tests")
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/jsonb")
    async def jsonb() -> None:  # through SQLAlchemy: a DBAPIError
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT CAST(:v AS jsonb)"), {"v": '{"n": NaN}'})

    @app.get("/nul")
    async def nul() -> None:  # plain asyncpg, the enqueue's insert path: a PostgresError
        conn = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            await conn.fetch("SELECT convert_from('\\x00'::bytea, 'UTF8')")
        finally:
            await conn.close()

    @app.get("/surrogate")
    async def surrogate() -> None:  # the driver cannot encode the argument
        conn = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            await conn.fetch("SELECT $1::text", "\ud800")
        finally:
            await conn.close()

    try:
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
            for path in ("/jsonb", "/nul", "/surrogate"):
                response = await http.get(path)
                assert response.status_code == 422, (path, response.text)
                assert "retry-after" not in response.headers
                assert response.json()["type"] == "/problems/validation"
    finally:
        await engine.dispose()
