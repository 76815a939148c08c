"""The client API over real HTTP on loopback, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service.app import create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_tenant
from testkit.asgi import serve_app
from transcription_core import repository as repo

JOB = {
    "media_url": "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc",
    "webhook_url": "https://api.example.com/hooks/transcripts",
    "external_id": "post-123",
    "language": "en",
    "metadata": {"creator": 42},
}


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    key: str
    other_key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture
async def api(database_url: str, engine: AsyncEngine) -> AsyncIterator[Api]:
    tenant = await make_tenant(engine, "org-k9p2lbe")
    other = await make_tenant(engine, "org-other")
    settings = EnqueueSettings(database_url=database_url, allow_private_urls=False)
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        yield Api(url, http, tenant.api_key, other.api_key)


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and "detail" in body and "type" in body
    return body


async def test_enqueue_then_read(api: Api) -> None:
    created = await api.http.post("/v1/jobs", json=JOB, headers=api.auth())
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] == "QUEUED" and job["attempts"] == 0
    assert {k: job[k] for k in JOB} == JOB
    assert job["transcript"] is None and job["failure_reason"] is None
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    fetched = await api.http.get(f"/v1/jobs/{job['id']}", headers=api.auth())
    assert fetched.status_code == 200 and fetched.json()["id"] == job["id"]


async def test_missing_or_wrong_key_is_401(api: Api) -> None:
    assert_problem(await api.http.post("/v1/jobs", json=JOB), 401)
    assert_problem(await api.http.get("/v1/jobs", headers=api.auth("tsk_nope")), 401)
    assert_problem(await api.http.get("/v1/jobs", headers={"Authorization": "Basic x"}), 401)


async def test_a_tenant_cannot_see_another_tenants_job(api: Api) -> None:
    job = (await api.http.post("/v1/jobs", json=JOB, headers=api.auth())).json()
    other = api.auth(api.other_key)
    assert_problem(await api.http.get(f"/v1/jobs/{job['id']}", headers=other), 404)
    assert_problem(await api.http.get(f"/v1/jobs/{job['id']}/transcript", headers=other), 404)
    assert_problem(await api.http.post(f"/v1/jobs/{job['id']}/cancel", headers=other), 404)
    listed = (await api.http.get("/v1/jobs", headers=other)).json()
    assert listed["jobs"] == []


async def test_concurrent_duplicates_with_one_idempotency_key_create_one_job(
    api: Api, engine: AsyncEngine
) -> None:
    headers = {**api.auth(), "Idempotency-Key": "upload-123"}
    responses = await asyncio.gather(
        *(api.http.post("/v1/jobs", json=JOB, headers=headers) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    async with engine.connect() as conn:
        rows, _ = await repo.list_jobs(conn, "org-k9p2lbe")
    assert len(rows) == 1
    changed = {**JOB, "external_id": "post-999"}
    assert_problem(await api.http.post("/v1/jobs", json=changed, headers=headers), 409)


async def test_list_filters_and_cursor(api: Api) -> None:
    ids = []
    for n in range(5):
        body = {**JOB, "external_id": f"post-{n % 2}"}
        ids.append((await api.http.post("/v1/jobs", json=body, headers=api.auth())).json()["id"])
    page = (await api.http.get("/v1/jobs?limit=2", headers=api.auth())).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["jobs"]]
    while page["next_cursor"]:
        page = (
            await api.http.get(
                "/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}, headers=api.auth()
            )
        ).json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == ids[::-1]
    odd = (await api.http.get("/v1/jobs?external_id=post-1", headers=api.auth())).json()
    assert {j["id"] for j in odd["jobs"]} == {ids[1], ids[3]}
    queued = (await api.http.get("/v1/jobs?status=QUEUED", headers=api.auth())).json()
    assert len(queued["jobs"]) == 5
    none = (await api.http.get("/v1/jobs?status=SUCCEEDED", headers=api.auth())).json()
    assert none["jobs"] == []


BAD_BODIES = {
    "malformed json": b'{"media_url": ',
    "not an object": b"[1, 2]",
    "empty": b"",
    "wrong types": json.dumps({**JOB, "media_url": 123}).encode(),
    "metadata not an object": json.dumps({**JOB, "metadata": [1]}).encode(),
    "missing webhook": json.dumps({"media_url": JOB["media_url"]}).encode(),
    "unknown field": json.dumps({**JOB, "priority": "high"}).encode(),
    "file url": json.dumps({**JOB, "media_url": "file:///etc/passwd"}).encode(),
    "private media url": json.dumps({**JOB, "media_url": "http://10.1.2.3/a.mp3"}).encode(),
    "loopback webhook": json.dumps({**JOB, "webhook_url": "http://127.0.0.1:9/h"}).encode(),
    "metadata service": json.dumps({**JOB, "media_url": "http://169.254.169.254/latest/"}).encode(),
    "credentials in url": json.dumps(
        {**JOB, "media_url": "https://u:p@bucket.example.com/a.mp3"}
    ).encode(),
    "bad language": json.dumps({**JOB, "language": "english!!"}).encode(),
    "metadata too large": json.dumps({**JOB, "metadata": {"x": "y" * 17_000}}).encode(),
    "external id too long": json.dumps({**JOB, "external_id": "x" * 300}).encode(),
}


@pytest.mark.parametrize("name", BAD_BODIES)
async def test_bad_input_is_a_4xx_problem_never_a_500(api: Api, name: str) -> None:
    response = await api.http.post(
        "/v1/jobs",
        content=BAD_BODIES[name],
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    body = assert_problem(response, 422)
    assert body["errors"], body


async def test_oversized_body_is_413(api: Api) -> None:
    huge = json.dumps({**JOB, "metadata": {"x": "y" * 100_000}})
    assert_problem(
        await api.http.post(
            "/v1/jobs", content=huge, headers={**api.auth(), "Content-Type": "application/json"}
        ),
        413,
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(100):
            yield b" " * 1024

    assert_problem(
        await api.http.post(
            "/v1/jobs", content=chunks(), headers={**api.auth(), "Content-Type": "application/json"}
        ),
        413,
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=abc",
        "/v1/jobs?status=DONE",
        "/v1/jobs?cursor=zz!",
        "/v1/jobs/x/transcript?format=pdf",
    ],
)
async def test_bad_query_parameters_are_422(api: Api, path: str) -> None:
    assert_problem(await api.http.get(path, headers=api.auth()), 422)


async def test_long_idempotency_key_is_422(api: Api) -> None:
    headers = {**api.auth(), "Idempotency-Key": "k" * 300}
    assert_problem(await api.http.post("/v1/jobs", json=JOB, headers=headers), 422)


async def test_transcript_is_409_until_it_exists_and_cancel_works(api: Api) -> None:
    job = (await api.http.post("/v1/jobs", json=JOB, headers=api.auth())).json()
    assert_problem(await api.http.get(f"/v1/jobs/{job['id']}/transcript", headers=api.auth()), 409)
    assert_problem(await api.http.post(f"/v1/jobs/{job['id']}/redeliver", headers=api.auth()), 409)
    canceled = await api.http.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth())
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    again = await api.http.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth())
    assert_problem(again, 409)


async def test_health_ready_metrics_and_openapi(api: Api) -> None:
    assert (await api.http.get("/healthz")).status_code == 200
    assert (await api.http.get("/readyz")).status_code == 200
    await api.http.get("/v1/jobs", headers=api.auth())
    metrics = (await api.http.get("/metrics")).text
    assert 'transcription_http_requests_total{route="/v1/jobs",service="enqueue"' in metrics
    spec = (await api.http.get("/openapi.json")).json()
    assert "/v1/jobs" in spec["paths"] and "/v1/jobs/{job_id}/redeliver" in spec["paths"]


async def test_private_urls_are_accepted_when_the_operator_allows_them(
    database_url: str, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine, "org-local")
    settings = EnqueueSettings(database_url=database_url, allow_private_urls=True)
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        body = {
            **JOB,
            "media_url": "http://127.0.0.1:9000/a.mp3",
            "webhook_url": "http://localhost:9001/hook",
        }
        response = await http.post(
            "/v1/jobs", json=body, headers={"Authorization": f"Bearer {tenant.api_key}"}
        )
    assert response.status_code == 202, response.text


async def test_a_database_outage_is_503_not_500() -> None:
    settings = EnqueueSettings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:9/none", api_key_cache_seconds=0
    )
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/v1/jobs", json=JOB, headers={"Authorization": "Bearer k"})
        ready = await http.get("/readyz")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "5" and "unavailable" in body["detail"]
    assert ready.status_code == 503


@pytest.mark.postgres
async def test_an_enqueue_wakes_the_orchestrators_after_its_commit(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    """The API announces new jobs on the orchestrators' channel, and a listener woken by
    it finds the job already committed."""
    import asyncpg

    from transcription_core.db import asyncpg_dsn

    tenant = await make_tenant(pg_engine, "org-k9p2lbe")
    heard: asyncio.Queue[None] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(pg_url))
    settings = EnqueueSettings(database_url=pg_url)
    try:
        await listener.add_listener(repo.NOTIFY_CHANNEL, lambda *_: heard.put_nowait(None))
        async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
            created = await http.post(
                "/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {tenant.api_key}"}
            )
            assert created.status_code == 202, created.text
            await asyncio.wait_for(heard.get(), timeout=5)
            async with pg_engine.connect() as conn:
                assert await repo.get_job(conn, created.json()["id"]) is not None
    finally:
        await listener.close()


@pytest.mark.postgres
async def test_the_store_going_away_under_a_running_api_is_503_then_it_recovers(
    pg_engine: AsyncEngine, pg_url: str, pg_admin: Callable[[str], Awaitable[None]]
) -> None:
    """The hot path's own connections (asyncpg) map an outage to 503 like the rest."""
    _admin = pg_admin
    tenant = await make_tenant(pg_engine, "org-k9p2lbe")
    await pg_engine.dispose()
    database = pg_url.rsplit("/", 1)[1]
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    settings = EnqueueSettings(database_url=pg_url)
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/v1/jobs", json=JOB, headers=headers)).status_code == 202
        await _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await _admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )
        try:
            for _ in range(2):  # a dead pooled connection, then a refused new one
                down = await http.post("/v1/jobs", json=JOB, headers=headers)
                assert_problem(down, 503)
        finally:
            await _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        assert (await http.post("/v1/jobs", json=JOB, headers=headers)).status_code == 202


async def job_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        rows, _ = await repo.list_jobs(conn, "org-k9p2lbe", limit=200)
    return len(rows)


def nested(depth: int) -> dict:
    """An object ``depth`` levels deep: ``nested(1) == {}``, ``nested(2) == {"a": {}}``."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# A URL whose host can never be reached, or whose address is not global unicast, is
# refused at enqueue: the worker would otherwise fail on it at every attempt.
UNUSABLE_URLS = {
    "webhook host label over 63": ("webhook_url", "https://" + "a" * 64 + ".example.com/h"),
    "webhook host empty label": ("webhook_url", "https://hooks..example.com/h"),
    "webhook fullwidth host": ("webhook_url", "https://\uff45\uff58\uff41\uff4d\uff50\uff4c.com/h"),
    "webhook tab in host": ("webhook_url", "https://exa\tmple.com/h"),
    "webhook 6to4": ("webhook_url", "http://[2002:a9fe:a9fe::1]/h"),
    "media 6to4 of the metadata service": ("media_url", "http://[2002:a9fe:a9fe::1]/a.mp3"),
    "media teredo": ("media_url", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/a.mp3"),
    "media ipv4-mapped": ("media_url", "http://[::ffff:8.8.8.8]/a.mp3"),
}


@pytest.mark.parametrize("name", UNUSABLE_URLS)
async def test_a_url_that_can_never_work_is_refused_naming_its_field(
    api: Api, engine: AsyncEngine, name: str
) -> None:
    field, url = UNUSABLE_URLS[name]
    response = await api.http.post("/v1/jobs", json={**JOB, field: url}, headers=api.auth())
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == [field], body
    assert await job_count(engine) == 0


async def test_deep_metadata_is_refused_before_any_write(api: Api, engine: AsyncEngine) -> None:
    """257 levels once made the insert succeed and its response fail (500)."""
    for depth in (33, 257, 900):
        response = await api.http.post(
            "/v1/jobs", json={**JOB, "metadata": nested(depth)}, headers=api.auth()
        )
        body = assert_problem(response, 422)
        assert [e["field"] for e in body["errors"]] == ["metadata"], body
        assert "deep" in body["errors"][0]["message"]
    assert await job_count(engine) == 0
    deepest = await api.http.post(
        "/v1/jobs", json={**JOB, "metadata": nested(32)}, headers=api.auth()
    )
    assert deepest.status_code == 202, deepest.text
    assert deepest.json()["metadata"] == nested(32)


async def test_the_metadata_depth_limit_is_a_setting(
    database_url: str, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine, "org-shallow")
    settings = EnqueueSettings(database_url=database_url, max_metadata_depth=2)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        ok = await http.post("/v1/jobs", json={**JOB, "metadata": {"a": [1]}}, headers=headers)
        deep = await http.post("/v1/jobs", json={**JOB, "metadata": {"a": [[1]]}}, headers=headers)
    assert ok.status_code == 202, ok.text
    assert_problem(deep, 422)


@pytest.mark.parametrize("depth", [257, 900])
async def test_a_deep_metadata_row_stored_before_the_limit_still_reads(
    api: Api, engine: AsyncEngine, depth: int
) -> None:
    """Rows the API stored before it checked the depth (up to about 1,000 levels) must
    not break a listing, a read or a cancel: they come back as stored."""
    async with engine.begin() as conn:
        job = await repo.insert_job(
            conn,
            repo.NewJob(
                tenant="org-k9p2lbe",
                media_url=JOB["media_url"],
                webhook_url=JOB["webhook_url"],
                metadata=nested(depth),
            ),
        )
    listed = await api.http.get("/v1/jobs", headers=api.auth())
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["jobs"]
    assert row["id"] == job.id and row["metadata"] == nested(depth)
    one = await api.http.get(f"/v1/jobs/{job.id}", headers=api.auth())
    assert one.status_code == 200, one.text
    assert one.json()["metadata"] == nested(depth)
    canceled = await api.http.post(f"/v1/jobs/{job.id}/cancel", headers=api.auth())
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "CANCELED"
    assert canceled.json()["metadata"] == nested(depth)


# Values PostgreSQL cannot store (NUL in text, a lone surrogate in UTF-8, NaN and
# infinities in jsonb): refused as 422 naming the field, never a 503 "retry shortly".
UNSTORABLE = {
    "NUL in media_url": ("media_url", {**JOB, "media_url": JOB["media_url"] + "\x00"}),
    "surrogate in media_url": ("media_url", {**JOB, "media_url": JOB["media_url"] + "\ud800"}),
    "NUL in webhook_url": ("webhook_url", {**JOB, "webhook_url": JOB["webhook_url"] + "\x00"}),
    "surrogate in webhook_url": (
        "webhook_url",
        {**JOB, "webhook_url": JOB["webhook_url"] + "\udfff"},
    ),
    "NUL in external_id": ("external_id", {**JOB, "external_id": "post\x00123"}),
    "surrogate in external_id": ("external_id", {**JOB, "external_id": "post\ud800"}),
    "NUL in a metadata value": ("metadata", {**JOB, "metadata": {"a": ["x\x00"]}}),
    "NUL in a metadata key": ("metadata", {**JOB, "metadata": {"a\x00": 1}}),
    "surrogate in a metadata value": ("metadata", {**JOB, "metadata": {"a": {"b": "\ud83d"}}}),
    "surrogate in a metadata key": ("metadata", {**JOB, "metadata": {"\udc00": 1}}),
}
NON_FINITE = {
    "NaN": b'{"n": NaN}',
    "Infinity": b'{"n": [Infinity]}',
    "-Infinity": b'{"n": {"m": -Infinity}}',
    "1e400": b'{"n": 1e400}',
}


@pytest.mark.parametrize("name", UNSTORABLE)
async def test_unstorable_strings_are_422_naming_the_field(
    api: Api, engine: AsyncEngine, name: str
) -> None:
    field, body = UNSTORABLE[name]
    response = await api.http.post(
        "/v1/jobs",
        content=json.dumps(body).encode(),  # \u0000 and \ud800 as JSON escapes
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await job_count(engine) == 0


@pytest.mark.parametrize("name", NON_FINITE)
async def test_non_finite_numbers_in_metadata_are_422(
    api: Api, engine: AsyncEngine, name: str
) -> None:
    job = json.dumps({k: v for k, v in JOB.items() if k != "metadata"})
    content = job[:-1].encode() + b', "metadata": ' + NON_FINITE[name] + b"}"
    response = await api.http.post(
        "/v1/jobs", content=content, headers={**api.auth(), "Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["metadata"], problem
    assert await job_count(engine) == 0


def _cursor(job_id: str) -> str:
    return repo.encode_cursor(datetime.now(UTC), job_id)


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/jobs/a%00b", "job_id"),
        ("GET", "/v1/jobs/a%00b/transcript", "job_id"),
        ("POST", "/v1/jobs/a%00b/cancel", "job_id"),
        ("POST", "/v1/jobs/a%00b/redeliver", "job_id"),
        ("GET", "/v1/jobs?external_id=post%00", "external_id"),
        ("GET", f"/v1/jobs?cursor={_cursor('a' + chr(0) + 'b')}", "cursor"),
        ("GET", f"/v1/jobs?cursor={_cursor(chr(0xD800))}", "cursor"),
    ],
    ids=[
        "get",
        "transcript",
        "cancel",
        "redeliver",
        "external_id",
        "cursor-nul",
        "cursor-surrogate",
    ],
)
async def test_nul_in_a_path_or_query_parameter_is_422(
    api: Api, method: str, path: str, field: str
) -> None:
    response = await api.http.request(method, path, headers=api.auth())
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem


async def test_a_percent_encoded_surrogate_arrives_as_replacement_characters(api: Api) -> None:
    """%ED%A0%80 is not UTF-8: the server decodes it to U+FFFD, so no lone surrogate can
    reach a path or query parameter; the request is an ordinary miss, not a 503."""
    assert_problem(await api.http.get("/v1/jobs/a%ED%A0%80", headers=api.auth()), 404)
    listed = await api.http.get("/v1/jobs?external_id=%ED%A0%80", headers=api.auth())
    assert listed.status_code == 200 and listed.json()["jobs"] == []


UNPARSABLE = {"invalid UTF-8": b'{"media_url": "\xff\xfe"}', "nested too deep": b"[" * 5000}


@pytest.mark.parametrize("name", UNPARSABLE)
async def test_a_body_that_cannot_be_parsed_is_400_with_a_problem_type(api: Api, name: str) -> None:
    response = await api.http.post(
        "/v1/jobs",
        content=UNPARSABLE[name],
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/malformed-body", name
    assert "parsing the body" not in problem["detail"]
