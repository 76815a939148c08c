"""A tenant's credentials rotate without a gap and a leaked one stops (issue 17, item 5):
API keys against the real enqueue API, webhook secrets through the real worker's delivery,
verified with the stock ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from test_job_ends import TRANSCRIPT, Scripted, run_to_rest

from enqueue_service.app import create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_job, make_replica, make_tenant
from testkit.asgi import serve_app
from testkit.webhook_receiver import WebhookReceiver
from transcriber_service.webhooks import WebhookSender, message_body
from transcription_cli.main import main as cli
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.status import JobStatus


async def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli, args)
    return code, capsys.readouterr().out


@pytest.fixture
async def api(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The enqueue API on loopback, looking up every key (no cache)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    settings = EnqueueSettings(database_url=database_url, api_key_cache_seconds=0)
    async with serve_app(create_app(settings)) as url:
        yield url


async def status_with(url: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    if response.status_code == 401:
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code


async def test_a_key_rotates_without_a_gap_then_the_old_one_is_revoked(
    api: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    old = (await make_tenant(engine)).api_key
    code, out = await run_cli(["tenants", "rotate-key", "org-test", "--json"], capsys)
    new = json.loads(out)["api_key"]
    assert code == 0 and new.startswith("tsk_") and new != old
    assert (await status_with(api, old), await status_with(api, new)) == (200, 200)

    code, out = await run_cli(["tenants", "keys", "org-test", "--json"], capsys)
    keys = json.loads(out)["keys"]
    assert {k["prefix"] for k in keys} == {old[:12], new[:12]}
    assert all(k["revoked_at"] is None for k in keys)
    assert old not in out and new not in out  # never the keys themselves

    code, out = await run_cli(["tenants", "revoke-key", "org-test", old[:12]], capsys)
    assert code == 0 and "1 active key(s) left" in out
    assert (await status_with(api, old), await status_with(api, new)) == (401, 200)
    code, out = await run_cli(["tenants", "keys", "org-test"], capsys)
    assert f"{old[:12]}..." in out and "revoked" in out and "active" in out
    # Revoking it again, or a key it does not have, is an error.
    assert (await run_cli(["tenants", "revoke-key", "org-test", old[:12]], capsys))[0] == 1
    assert (await run_cli(["tenants", "revoke-key", "org-nope", new[:12]], capsys))[0] == 1


async def test_a_leaked_key_is_replaced_and_every_other_key_revoked_at_once(
    api: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    first = (await make_tenant(engine)).api_key
    second = json.loads((await run_cli(["tenants", "rotate-key", "org-test", "--json"], capsys))[1])
    code, out = await run_cli(
        ["tenants", "rotate-key", "org-test", "--revoke-others", "--json"], capsys
    )
    third = json.loads(out)
    assert code == 0 and third["revoked"] == 2
    statuses = [await status_with(api, k) for k in (first, second["api_key"], third["api_key"])]
    assert statuses == [401, 401, 200]


def test_revoke_key_wants_a_key_name_it_can_match() -> None:
    assert cli(["tenants", "revoke-key", "org-test", "abc"]) == 2


async def test_rotating_an_unknown_tenant_is_an_error(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    for args in (["rotate-key", "org-nope"], ["rotate-webhook-secret", "org-nope"]):
        assert await asyncio.to_thread(cli, ["tenants", *args]) == 1


async def test_during_the_overlap_each_message_verifies_with_either_secret(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository's secrets, signed by the sender, checked by ``standardwebhooks``."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    old = (await make_tenant(engine)).webhook_secret
    code = await asyncio.to_thread(
        cli, ["tenants", "rotate-webhook-secret", "org-test", "--overlap", "2h"]
    )
    assert code == 0
    async with engine.connect() as conn:
        signing = await repo.tenant_webhook_secrets(conn, "org-test")
        later = await repo.tenant_webhook_secrets(conn, "org-test", utcnow() + timedelta(hours=3))
    new = signing[0]
    assert signing == [new, old] and new != old and later == [new]

    async with WebhookReceiver() as receiver, httpx.AsyncClient() as http:
        receiver.secrets["org-test"] = old
        sender = WebhookSender(http, timeout=5, allow_private=True)
        body = message_body("transcription.succeeded", {"id": "j1"})
        delivery = await sender.send(receiver.hook_url("org-test"), signing, "msg_1", body)
        assert delivery.delivered
    (got,) = receiver.deliveries
    assert got.signature_ok  # the receiver that still has the old secret
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(got.body, got.headers)["data"] == {"id": "j1"}


@pytest.mark.postgres
async def test_the_worker_signs_a_real_delivery_with_both_secrets_then_the_new_one(
    pg_url: str,
    pg_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_url)
    old = (await make_tenant(pg_engine)).webhook_secret
    code, out = await run_cli(["tenants", "rotate-webhook-secret", "org-test", "--json"], capsys)
    rotated = json.loads(out)
    new = rotated["webhook_secret"]
    assert code == 0 and rotated["previous_secret_signs_until"]
    async with WebhookReceiver() as receiver, httpx.AsyncClient() as http:
        receiver.secrets["org-test"] = new
        await make_replica(pg_engine)
        await make_job(pg_engine, webhook_url=receiver.hook_url("org-test"))
        row, _ = await run_to_rest(pg_engine, pg_url, Scripted(TRANSCRIPT), http)
        assert row.status == JobStatus.SUCCEEDED
        (got,) = receiver.deliveries
        for secret in (old, new):
            assert Webhook(secret).verify(got.body, got.headers)["type"] == (
                "transcription.succeeded"
            )

        # A rotation without overlap: the old secret signs nothing more.
        code, out = await run_cli(
            ["tenants", "rotate-webhook-secret", "org-test", "--overlap", "0", "--json"], capsys
        )
        newest = json.loads(out)["webhook_secret"]
        assert code == 0 and json.loads(out)["previous_secret_signs_until"] is None
        receiver.secrets["org-test"] = newest
        async with pg_engine.begin() as conn:
            await conn.execute(repo.jobs.delete())
        await make_job(pg_engine, webhook_url=receiver.hook_url("org-test"))
        row, _ = await run_to_rest(pg_engine, pg_url, Scripted(TRANSCRIPT), http)
    assert row.status == JobStatus.SUCCEEDED
    last = receiver.deliveries[-1]
    assert last.signature_ok and len(last.headers["webhook-signature"].split(" ")) == 1
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(last.body, last.headers)
