"""Webhook signing and delivery against real receivers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook

from testkit.asgi import serve_app
from testkit.webhook_receiver import WebhookReceiver
from transcriber_service.webhooks import WebhookSender, message_body, sign
from transcription_core.repository import new_webhook_secret
from transcription_core.retry_after import parse_retry_after

SECRET = new_webhook_secret()
#: "localhost" in fullwidth letters (U+FF4C ...): IDNA maps it, httpx refuses it.
FULLWIDTH_LOCALHOST = "".join(chr(ord(c) + 0xFEE0) for c in "localhost")
received: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    received.clear()
    app = FastAPI()

    @app.post("/ok")
    async def ok(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    @app.post("/redirect")
    async def redirect() -> Response:
        return Response(status_code=307, headers={"Location": "/ok"})

    @app.post("/busy")
    async def busy() -> Response:
        return Response(status_code=429, headers={"Retry-After": "7"})

    async with serve_app(app) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_a_delivery_verifies_with_the_standardwebhooks_package(
    receiver: str, http: httpx.AsyncClient
) -> None:
    sender = WebhookSender(http, timeout=5, allow_private=True)
    job = {"id": "j1", "status": "SUCCEEDED", "transcript": {"text": "hello"}}
    result = await sender.send(
        f"{receiver}/ok", SECRET, "msg_1", message_body("transcription.succeeded", job)
    )
    assert result.delivered and result.status == 204
    ((headers, body),) = received
    assert headers["webhook-id"] == "msg_1"
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "transcription.succeeded" and payload["data"] == job
    assert payload["timestamp"].endswith("Z")


def test_signature_matches_the_reference_implementation() -> None:
    body = b'{"a":1}'
    theirs = Webhook(SECRET).sign(
        "msg_x",
        __import__("datetime").datetime.fromtimestamp(1_700_000_000, tz=__import__("datetime").UTC),
        body.decode(),
    )
    assert sign(SECRET, "msg_x", 1_700_000_000, body) == theirs


async def test_redirects_are_not_followed(receiver: str, http: httpx.AsyncClient) -> None:
    sender = WebhookSender(http, timeout=5, allow_private=True)
    result = await sender.send(f"{receiver}/redirect", SECRET, "m", b"{}")
    assert not result.delivered and result.status == 307 and received == []


async def test_retry_after_is_reported(receiver: str, http: httpx.AsyncClient) -> None:
    sender = WebhookSender(http, timeout=5, allow_private=True)
    result = await sender.send(f"{receiver}/busy", SECRET, "m", b"{}")
    assert (result.delivered, result.status, result.retry_after) == (False, 429, 7.0)


async def test_private_receivers_are_refused_in_production(
    receiver: str, http: httpx.AsyncClient
) -> None:
    sender = WebhookSender(http, timeout=5, allow_private=False)
    result = await sender.send(f"{receiver}/ok", SECRET, "m", b"{}")
    assert not result.delivered and "refused" in result.detail and received == []


async def test_a_dead_or_slow_receiver_is_a_failed_delivery(http: httpx.AsyncClient) -> None:
    sender = WebhookSender(http, timeout=0.5, allow_private=True)
    result = await sender.send("http://127.0.0.1:9/hook", SECRET, "m", b"{}")
    assert not result.delivered and result.status is None and "ConnectError" in result.detail


@pytest.mark.parametrize(
    ("url", "allow_private"),
    [
        # These raised in the delivery (getaddrinfo's IDNA codec: UnicodeError; httpx:
        # InvalidURL, not an HTTPError) until the guard learnt to refuse hosts that no
        # resolver takes; now they are refused before any connection.
        ("http://" + "a" * 64 + ".example/hook", False),
        (f"http://{FULLWIDTH_LOCALHOST}:9/hook", True),
        ("http://local\thost:9/hook", True),
    ],
    ids=["label-over-63", "fullwidth-host", "tab-in-host"],
)
async def test_a_host_no_resolver_takes_is_a_refused_delivery(
    http: httpx.AsyncClient, url: str, allow_private: bool
) -> None:
    sender = WebhookSender(http, timeout=5, allow_private=allow_private)
    result = await sender.send(url, SECRET, "m", b"{}")
    assert not result.delivered and result.status is None
    assert "webhook URL refused" in result.detail


@pytest.mark.parametrize("error", [UnicodeError("label too long"), RuntimeError("surprise")])
async def test_any_exception_is_a_failed_delivery_naming_its_type(error: Exception) -> None:
    """Whatever the client raises, not only an httpx.HTTPError, is a failed delivery."""

    def raises(_request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(raises)) as client:
        sender = WebhookSender(client, timeout=5, allow_private=True)
        result = await sender.send("http://127.0.0.1:9/hook", SECRET, "m", b"{}")
    assert not result.delivered and result.status is None
    assert type(error).__name__ in result.detail


@pytest.mark.parametrize("status", [200, 500])
async def test_a_huge_answer_is_not_read(http: httpx.AsyncClient, status: int) -> None:
    """A receiver answering 200 MB (generated as it is sent): the sender reads at most a
    small cap of it and hangs up, so what the receiver got out is the kernel's buffers,
    not the body."""
    async with WebhookReceiver(huge_status=status, huge_bytes=200 * 1024**2) as peer:
        sender = WebhookSender(http, timeout=30, allow_private=True)
        url = peer.hook_url("t", "huge")
        result = await asyncio.wait_for(sender.send(url, SECRET, "m", b"{}"), 60)
        await asyncio.wait_for(peer.hung_up.wait(), 30)
    assert result.delivered == (status == 200) and result.status == status
    sent = peer.huge_sent
    assert sent < 32 * 1024**2, f"{sent} bytes of the body left the receiver"
    assert len(result.detail) < 2 * 1024


@pytest.mark.parametrize("behaviour", ["drip-headers", "drip-body"])
async def test_one_deadline_bounds_the_whole_exchange(
    http: httpx.AsyncClient, behaviour: str
) -> None:
    """One byte every 0.5 s never trips a 1 s read timeout; the deadline cuts it."""
    async with WebhookReceiver(drip_seconds=0.5) as peer:
        sender = WebhookSender(http, timeout=1, allow_private=True)
        url = peer.hook_url("t", behaviour)
        result = await asyncio.wait_for(sender.send(url, SECRET, "m", b"{}"), 30)
        await asyncio.wait_for(peer.hung_up.wait(), 30)
    assert not result.delivered
    assert "1 s" in result.detail, result.detail
    if behaviour == "drip-body":  # the answer's status is known; only its body dripped
        assert result.status == 500 and "HTTP 500" in result.detail


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
