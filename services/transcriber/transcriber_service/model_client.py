"""The transcriber's client of the model server: ``POST {base_url}/v1/predict``.

One call sends one chunk of 16 kHz mono s16le PCM and gets its segments back, with times
relative to the chunk. A transient failure is retried inside the call, a bounded number of
times (tenacity, exponential backoff with jitter):

* 503 and 429 — the model server's queue is full — after the ``Retry-After`` it sends
  (capped at ``max_retry_after``), or the backoff when it sends none;
* any other 5xx, and every ``httpx.TransportError`` (connection refused or reset,
  timeouts: ``httpx.TimeoutException`` is one).

Any other 4xx means the request itself is wrong and is not retried. When the client gives
up it raises :class:`ModelServerError`, saying what failed and the last HTTP status.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from transcription_core.errors import TranscriptionError
from transcription_core.retry_after import parse_retry_after

PCM_CONTENT_TYPE = "audio/x-pcm-s16le"


class ModelServerError(TranscriptionError):
    """The model server failed a chunk, or could not be reached, for good."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class PredictWord(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class PredictSegment(BaseModel):
    """A segment; ``start`` and ``end`` are seconds from the start of the chunk."""

    start: float
    end: float
    text: str
    words: list[PredictWord] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class PredictResult(BaseModel):
    segments: list[PredictSegment]
    language: str
    language_probability: float
    duration: float
    model: str

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments).strip()


class _Transient(Exception):
    """A retryable answer (503, 429, other 5xx)."""

    def __init__(self, status_code: int, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after


class ModelServerClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        max_attempts: int = 4,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._url = base_url.rstrip("/") + "/v1/predict"
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff
        )

    async def predict(
        self,
        pcm_s16le: bytes,
        *,
        language: str | None,
        beam_size: int = 5,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
    ) -> PredictResult:
        """Transcribe one chunk; raises :class:`ModelServerError` when it cannot."""
        params: dict[str, str | int] = {
            "beam_size": beam_size,
            "word_timestamps": "true" if word_timestamps else "false",
        }
        if language is not None:
            params["language"] = language
        if initial_prompt is not None:
            params["initial_prompt"] = initial_prompt
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type((_Transient, httpx.TransportError)),
            reraise=True,
            sleep=self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._predict_once(pcm_s16le, params)
        except _Transient as exc:
            raise ModelServerError(
                f"the model server answered HTTP {exc.status_code} to POST {self._url} "
                f"{self.max_attempts} times: {exc.detail}",
                status_code=exc.status_code,
            ) from exc
        except httpx.TransportError as exc:
            raise ModelServerError(
                f"the model server at {self._url} could not be reached in "
                f"{self.max_attempts} attempts: {type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _predict_once(self, pcm: bytes, params: dict[str, str | int]) -> PredictResult:
        response = await self._http.post(
            self._url, content=pcm, params=params, headers={"Content-Type": PCM_CONTENT_TYPE}
        )
        status = response.status_code
        if status in (429, 503) or status >= 500:
            raise _Transient(
                status, _detail(response), parse_retry_after(response.headers.get("Retry-After"))
            )
        if status != 200:
            raise ModelServerError(
                f"the model server refused POST {self._url} with HTTP {status}: "
                f"{_detail(response)}",
                status_code=status,
            )
        try:
            return PredictResult.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelServerError(
                f"the model server answered POST {self._url} with an unexpected body: {exc}",
                status_code=status,
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            delay = min(exc.retry_after, self.max_retry_after)
            return delay + random.uniform(0, delay * 0.1)  # spread the clients out a little
        return float(self._backoff(state))


def _detail(response: httpx.Response) -> str:
    """The problem+json ``detail`` if there is one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return response.text[:200]
