"""ModelServerClient against httpx.MockTransport: what it retries, what it gives up on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from model_server.errors import ModelNotReady, QueueFull
from transcriber_service import metrics
from transcriber_service.model_capacity import ModelCapacity
from transcriber_service.model_client import (
    ModelServerClient,
    ModelServerError,
    is_queue_full,
)
from transcription_core.errors import ProblemError
from transcription_core.retry_after import parse_retry_after
from transcription_core.transcript import Transcript

OK_BODY = {
    "segments": [{"start": 0.0, "end": 1.5, "text": " Hello.", "words": None}],
    "language": "en",
    "language_probability": 1.0,
    "duration": 1.5,
    "model": "tiny.en",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": "about:blank", "title": "x", "status": status, "detail": detail},
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


def rendered(error: ProblemError) -> httpx.Response:
    """The answer the model server gives for ``error`` (its problem handler's output)."""
    return httpx.Response(
        error.status_code,
        json=error.problem(),
        headers={"content-type": "application/problem+json", **error.headers},
    )


def queue_full(retry_after: str | None = "1") -> httpx.Response:
    """The model server's 503 when MAX_QUEUED_CHUNKS already wait."""
    answer = rendered(QueueFull(2, 1))
    if retry_after is None:
        del answer.headers["Retry-After"]
    else:
        answer.headers["Retry-After"] = retry_after
    return answer


#: Knative's queue-proxy or activator, when its own request queue is full.
KNATIVE_FULL = httpx.Response(
    503, text="pending request queue full\n", headers={"content-type": "text/plain"}
)


def scripted(
    *answers: httpx.Response | Exception,
) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []
    remaining = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return seen, httpx.MockTransport(handler)


def client_for(
    transport: httpx.MockTransport, sleeps: list[float] | None = None, **kwargs: object
) -> Callable[[], ModelServerClient]:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    def make() -> ModelServerClient:
        http = httpx.AsyncClient(transport=transport)
        options = {"initial_backoff": 0.5, "max_backoff": 4.0, **kwargs}
        return ModelServerClient(http, "http://model-server:8003/", sleep=sleep, **options)  # type: ignore[arg-type]

    return make


async def test_predict_sends_pcm_and_options_and_parses_the_result() -> None:
    seen, transport = scripted(httpx.Response(200, json=OK_BODY))
    result = await client_for(transport)().predict(
        b"\x00\x00" * 10,
        language="de",
        beam_size=3,
        word_timestamps=True,
        initial_prompt="Glossar",
        task="translate",
        hotwords="ComfyUI",
    )
    assert isinstance(result, Transcript) and result.model == "tiny.en"
    assert result.text == "Hello." and result.segments[0].end == 1.5
    request = seen[0]
    assert request.url.path == "/v1/predict"
    assert request.headers["content-type"] == "audio/x-pcm-s16le"
    assert dict(request.url.params) == {
        "language": "de",
        "beam_size": "3",
        "word_timestamps": "true",
        "initial_prompt": "Glossar",
        "task": "translate",
        "hotwords": "ComfyUI",
    }
    assert request.content == b"\x00\x00" * 10


async def test_language_none_is_left_out_so_the_server_detects_it() -> None:
    seen, transport = scripted(httpx.Response(200, json=OK_BODY))
    await client_for(transport)().predict(b"\x00\x00", language=None)
    assert "language" not in seen[0].url.params


async def test_transient_failures_are_retried_until_success() -> None:
    seen, transport = scripted(
        problem(503, "queue full", {"Retry-After": "0"}),
        problem(500, "boom"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=OK_BODY),
    )
    result = await client_for(transport)().predict(b"\x00\x00", language="en")
    assert result.language == "en"
    assert len(seen) == 4


async def test_retry_after_is_honoured_else_exponential_backoff_with_jitter() -> None:
    sleeps: list[float] = []
    _, transport = scripted(
        problem(503, "queue full", {"Retry-After": "3"}),
        problem(429, "slow down", {"Retry-After": "120"}),
        problem(502, "bad gateway"),
        problem(500, "boom"),
        httpx.Response(200, json=OK_BODY),
    )
    client = client_for(transport, sleeps, max_attempts=5, max_retry_after=10)()
    await client.predict(b"\x00\x00", language="en")
    after_503, after_429, after_502, after_500 = sleeps
    assert 3 <= after_503 <= 3.3  # Retry-After, plus at most 10 % jitter
    assert 10 <= after_429 <= 11  # capped at max_retry_after
    assert 0.5 * 2**2 <= after_502 <= 0.5 * 2**2 + 0.5  # initial * 2^(attempt-1) + jitter
    assert after_500 == 4.0  # capped at max_backoff


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    seen, transport = scripted(problem(status, "the body is not audio"))
    with pytest.raises(ModelServerError) as failed:
        await client_for(transport)().predict(b"\x00\x00", language="en")
    assert len(seen) == 1
    assert failed.value.status_code == status
    assert f"HTTP {status}" in str(failed.value) and "the body is not audio" in str(failed.value)


async def test_giving_up_says_what_failed_and_the_status() -> None:
    seen, transport = scripted(*(problem(503, "queue full", {"Retry-After": "0"}),) * 3)
    with pytest.raises(ModelServerError) as failed:
        await client_for(transport, max_attempts=3)().predict(b"\x00\x00", language="en")
    assert len(seen) == 3
    assert failed.value.status_code == 503
    assert "HTTP 503" in str(failed.value) and "queue full" in str(failed.value)


async def test_timeouts_are_retried_then_reported() -> None:
    seen, transport = scripted(httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"))
    with pytest.raises(ModelServerError) as failed:
        await client_for(transport, max_attempts=2)().predict(b"\x00\x00", language="en")
    assert len(seen) == 2
    assert failed.value.status_code is None
    assert "could not be reached" in str(failed.value) and "ReadTimeout" in str(failed.value)


async def test_an_unexpected_body_is_an_error() -> None:
    _, transport = scripted(httpx.Response(200, json={"text": "no segments"}))
    with pytest.raises(ModelServerError, match="unexpected body"):
        await client_for(transport)().predict(b"\x00\x00", language="en")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- a busy model tier is not a broken one --------------------------------------------------------


def busy_count(status: str) -> float:
    return metrics.MODEL_BUSY_ANSWERS.labels(status)._value.get()


@pytest.mark.parametrize(
    ("answer", "busy"),
    [
        (queue_full(), True),
        (queue_full(retry_after=None), True),
        (problem(429, "slow down"), True),
        (httpx.Response(429), True),
        (KNATIVE_FULL, True),
        (rendered(ModelNotReady("the model is not loaded yet")), False),
        (problem(503, "queue full", {"Retry-After": "1"}), False),  # no mark: not ours
        (httpx.Response(503, headers={"Retry-After": "0"}), False),
        (httpx.Response(503, text="no healthy upstream"), False),
        (problem(502, "bad gateway"), False),
        (problem(500, "boom"), False),
    ],
)
def test_what_counts_as_a_full_queue(answer: httpx.Response, busy: bool) -> None:
    assert is_queue_full(answer) is busy


async def test_queue_full_answers_spend_no_attempt() -> None:
    full = [queue_full("1"), problem(429, "slow down"), KNATIVE_FULL] * 4
    seen, transport = scripted(*full, httpx.Response(200, json=OK_BODY))
    before = (busy_count("503"), busy_count("429"))
    result = await client_for(transport, [], max_attempts=1)().predict(b"\x00\x00", language="en")
    assert result.language == "en" and len(seen) == 13
    assert (busy_count("503") - before[0], busy_count("429") - before[1]) == (8, 4)


async def test_failures_count_between_queue_full_answers() -> None:
    seen, transport = scripted(
        queue_full(), problem(500, "boom"), queue_full(), queue_full(), problem(502, "bad")
    )
    with pytest.raises(ModelServerError, match="HTTP 502") as failed:
        await client_for(transport, [], max_attempts=2)().predict(b"\x00\x00", language="en")
    assert len(seen) == 5 and failed.value.status_code == 502


async def test_a_full_queue_waits_its_retry_after_else_the_backoff() -> None:
    sleeps: list[float] = []
    _, transport = scripted(
        queue_full("3"),
        queue_full("120"),
        queue_full(retry_after=None),
        queue_full("0"),
        httpx.Response(200, json=OK_BODY),
    )
    await client_for(transport, sleeps, max_retry_after=10)().predict(b"\x00\x00", language="en")
    after_3, after_120, after_none, after_0 = sleeps
    assert 3 <= after_3 <= 3.3
    assert 10 <= after_120 <= 11  # capped at max_retry_after
    assert 0.5 * 2**2 <= after_none <= 0.5 * 2**2 + 0.5  # the third busy answer's backoff
    assert 0.5 * 2**3 <= after_0 <= 4.0  # "0" is no pause: the backoff, capped


async def test_a_queue_that_stays_full_fails_the_chunk_at_the_busy_deadline() -> None:
    sleeps: list[float] = []
    seen, transport = scripted(*(queue_full("2"),) * 100)
    client = client_for(transport, sleeps, busy_deadline=9.0)()
    with pytest.raises(ModelServerError) as failed:
        await client.predict(b"\x00\x00", language="en")
    assert sum(sleeps) == pytest.approx(9.0, abs=0.01)  # the last pause is cut to it
    assert len(seen) == len(sleeps) + 1 and 5 <= len(seen) <= 6
    assert failed.value.status_code == 503
    message = str(failed.value)
    assert "MODEL_BUSY_DEADLINE_SECONDS" in message and "queue-full answers" in message


async def test_a_full_queue_halves_the_window_and_a_success_widens_it() -> None:
    capacity = ModelCapacity(8)
    _, transport = scripted(queue_full(), queue_full(), httpx.Response(200, json=OK_BODY))
    client = client_for(transport, [], capacity=capacity)()
    await client.predict(b"\x00\x00", language="en")
    # A full answer with one chunk out halves that one: the window drops from 8 to 1;
    # then one success: 2.
    assert capacity.aimd.limit == 2 and capacity.saturated and capacity.in_flight == 0


async def test_every_way_out_gives_the_slot_back() -> None:
    capacity = ModelCapacity(1)
    _, transport = scripted(
        problem(404, "no"), httpx.Response(200, json={"x": 1}), httpx.ConnectError("refused")
    )
    client = client_for(transport, [], capacity=capacity, max_attempts=1)()
    for _ in range(3):
        with pytest.raises(ModelServerError):
            await client.predict(b"\x00\x00", language="en")
        assert capacity.in_flight == 0
