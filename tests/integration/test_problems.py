"""What every service answers when something goes wrong that is not a client's mistake,
and what the shared handlers make of errors the job store raises about a request's values.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from enqueue_service.app import create_app as create_enqueue
from model_server.app import create_app as create_model_server
from orchestrator_service.app import create_app as create_orchestrator
from testkit.asgi import serve_app
from transcriber_service.app import create_app as create_transcriber
from transcription_core.db import asyncpg_dsn, create_engine
from transcription_core.http import install_problem_handlers, install_store_problem_handlers

SERVICES: dict[str, Callable[[], FastAPI]] = {
    "enqueue": create_enqueue,
    "orchestrator": create_orchestrator,
    "transcriber": create_transcriber,
    "model-server": create_model_server,
}


@pytest.mark.parametrize("service", SERVICES)
async def test_an_unexpected_exception_is_a_problem_500_logged_with_its_traceback(
    service: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = SERVICES[service]()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("s3cr3t internals")

    async with (
        serve_app(app, lifespan="off") as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "/problems/internal" and problem["status"] == 500
    assert "RuntimeError" in problem["detail"]
    assert "s3cr3t" not in response.text and "Traceback" not in response.text
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "internal_error"]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


#: Whether the service has a job store (the model server has none).
HAS_STORE = {"enqueue": True, "orchestrator": True, "transcriber": True, "model-server": False}


@pytest.mark.parametrize("service", SERVICES)
async def test_only_a_service_with_a_store_says_the_store_is_unavailable(service: str) -> None:
    """A connection error is "the job store is unavailable" (503, Retry-After) in the
    services that have one; in the model server it is an unexpected error like any other."""
    app = SERVICES[service]()

    @app.get("/unreachable")
    async def unreachable() -> None:
        raise ConnectionRefusedError("connection refused")

    async with (
        serve_app(app, lifespan="off") as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.get("/unreachable")
    assert response.headers["content-type"].startswith("application/problem+json")
    if HAS_STORE[service]:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "job store" in response.json()["detail"]
    else:
        assert response.status_code == 500
        assert response.json()["type"] == "/problems/internal"
        assert "retry-after" not in response.headers
        assert "store" not in response.text


@pytest.mark.postgres
async def test_a_value_the_store_refuses_is_a_client_error_not_an_outage(pg_url: str) -> None:
    """SQLSTATE class 22 (data exception) and arguments the driver cannot encode are about
    the request's values: 422, never "the job store is unavailable; retry shortly"."""
    engine = create_engine(pg_url, "transcription-tests")
    app = FastAPI()
    install_problem_handlers(app)
    install_store_problem_handlers(app)

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


@pytest.mark.parametrize(
    ("name", "status", "problem_type"),
    [
        ("no route", 404, "/problems/not-found"),
        ("wrong method", 405, "/problems/method-not-allowed"),
    ],
)
async def test_routing_errors_have_a_problem_type(
    name: str, status: int, problem_type: str
) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/only-get")
    async def only_get() -> None:
        return None

    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await (http.get("/nowhere") if status == 404 else http.post("/only-get"))
    assert response.status_code == status
    assert response.json()["type"] == problem_type, name
