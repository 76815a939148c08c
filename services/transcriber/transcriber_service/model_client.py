"""The transcriber's client of the model server: ``POST {base_url}/v1/predict``.

One call sends one chunk of 16 kHz mono s16le PCM and gets its transcript back
(:class:`~transcription_core.transcript.Transcript`, read with the server's own schema),
with times relative to the chunk. Each request holds a slot of this process's window on the model
tier (:class:`~transcriber_service.model_capacity.ModelCapacity`), and the answer is
one of three kinds:

* **the model tier is busy**: its queue is full. The chunk gives its slot back (the
  window halves), waits the ``Retry-After`` it was sent (capped at ``max_retry_after``;
  without one, the backoff) and is sent again, ahead of chunks not yet sent. This spends
  none of the chunk's attempts: it may go on for ``busy_deadline`` seconds of waiting
  (``MODEL_BUSY_DEADLINE_SECONDS``), after which the chunk fails. Busy means: a 429; a
  503 whose problem+json ``type`` is ``/problems/queue-full`` (the model server's
  ``QueueFull``, with ``Retry-After``); a 503 whose body says ``pending request queue
  full``, which is what Knative's queue-proxy and activator answer when their own request
  queue in front of a replica overflows.
* **the model tier failed**: any other 5xx (a 503 without either mark: a model not
  loaded, a replica gone, a proxy with no healthy upstream), and every
  ``httpx.TransportError`` (connection refused or reset, timeouts:
  ``httpx.TimeoutException`` is one). Retried after exponential backoff with jitter
  (or the ``Retry-After`` sent), ``max_attempts`` tries in all.
* any other 4xx means the request itself is wrong and is not retried; a 200 whose body is
  not a prediction is an error too.

When the client gives up it raises :class:`ModelServerError`, saying what failed and the
last HTTP status.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx
from pydantic import ValidationError

from transcriber_service import metrics
from transcriber_service.model_capacity import ModelCapacity, Slot
from transcription_core.errors import TranscriptionError
from transcription_core.predict import PCM_CONTENT_TYPE, PredictResponse
from transcription_core.retry_after import parse_retry_after
from transcription_core.transcript import Transcript


class ModelServerError(TranscriptionError):
    """The model server failed a chunk, or could not be reached, for good."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


#: The problem type of the model server's 503 when its queue is full (``QueueFull``).
QUEUE_FULL_TYPE = "/problems/queue-full"
#: The body of Knative's 503 when the queue-proxy's or activator's request queue is full.
KNATIVE_QUEUE_FULL = "pending request queue full"


class _Retryable(TranscriptionError):
    """An answer worth trying again: the tier busy (``busy``), or failing."""

    def __init__(
        self, status_code: int, detail: str, retry_after: float | None, *, busy: bool
    ) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after
        self.busy = busy


class _Waits:
    """What one chunk waited for capacity: in all, and since its first queue-full answer."""

    def __init__(self) -> None:
        self.total = 0.0
        self.busy = 0.0
        self.busy_answers = 0


class ModelServerClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        capacity: ModelCapacity | None = None,
        max_attempts: int = 4,
        busy_deadline: float = 900.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if initial_backoff <= 0:
            raise ValueError("initial_backoff must be positive")
        self._http = http
        self._url = base_url.rstrip("/") + "/v1/predict"
        self.capacity = capacity or ModelCapacity(16)
        self.max_attempts = max_attempts
        self.busy_deadline = busy_deadline
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep

    async def predict(
        self,
        pcm_s16le: bytes,
        *,
        language: str | None,
        beam_size: int = 5,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        task: str = "transcribe",
        hotwords: str | None = None,
        context: str | None = None,
    ) -> Transcript:
        """Transcribe one chunk; raises :class:`ModelServerError` when it cannot."""
        params: dict[str, str | int] = {
            "beam_size": beam_size,
            "word_timestamps": "true" if word_timestamps else "false",
            "task": task,
        }
        if language is not None:
            params["language"] = language
        if initial_prompt is not None:
            params["initial_prompt"] = initial_prompt
        if hotwords is not None:
            params["hotwords"] = hotwords
        if context is not None:
            params["context"] = context
        waits = _Waits()
        tries = failures = 0
        try:
            while True:
                slot = await self._acquire(waits)
                tries += 1
                try:
                    result = await self._predict_once(pcm_s16le, params)
                except (_Retryable, httpx.TransportError) as exc:
                    if isinstance(exc, _Retryable) and exc.busy:
                        self.capacity.queue_full(slot)
                        await self._wait_busy(exc, waits)
                        continue
                    self.capacity.release(slot)
                    failures += 1
                    if failures >= self.max_attempts:
                        raise self._failed(exc, failures) from exc
                    retry_after = exc.retry_after if isinstance(exc, _Retryable) else None
                    await self._sleep(self._failure_pause(retry_after, tries))
                    continue
                except BaseException:
                    self.capacity.release(slot)
                    raise
                self.capacity.success(slot)
                return result
        finally:
            metrics.MODEL_CAPACITY_WAIT.observe(waits.total)

    async def _acquire(self, waits: _Waits) -> Slot:
        """A slot in the window; after a queue-full answer, within the busy deadline."""
        started = time.monotonic()
        if not waits.busy_answers:
            slot = await self.capacity.acquire()
        else:
            try:
                async with asyncio.timeout(max(self.busy_deadline - waits.busy, 0.0)):
                    slot = await self.capacity.acquire(first=True)
            except TimeoutError:
                raise self._busy_too_long(waits, "no room in this transcriber's window") from None
        waited = time.monotonic() - started
        waits.total += waited
        if waits.busy_answers:
            waits.busy += waited
        return slot

    async def _wait_busy(self, answer: _Retryable, waits: _Waits) -> None:
        """After a queue-full answer: pause, unless the chunk has waited long enough."""
        metrics.MODEL_BUSY_ANSWERS.labels(str(answer.status_code)).inc()
        waits.busy_answers += 1
        left = self.busy_deadline - waits.busy
        if left <= 0:
            raise self._busy_too_long(
                waits, f"last answer HTTP {answer.status_code}: {answer.detail}"
            )
        if answer.retry_after:
            pause = _jittered(min(answer.retry_after, self.max_retry_after))
        else:
            pause = self._backoff(waits.busy_answers)
        pause = min(pause, left)
        await self._sleep(pause)
        waits.total += pause
        waits.busy += pause

    def _failed(self, exc: _Retryable | httpx.TransportError, failures: int) -> ModelServerError:
        if isinstance(exc, _Retryable):
            return ModelServerError(
                f"the model server answered HTTP {exc.status_code} to POST {self._url} "
                f"({failures} failed tries): {exc.detail}",
                status_code=exc.status_code,
            )
        return ModelServerError(
            f"the model server at {self._url} could not be reached in {failures} tries: "
            f"{type(exc).__name__}: {exc}"
        )

    def _busy_too_long(self, waits: _Waits, last: str) -> ModelServerError:
        return ModelServerError(
            f"the model tier stayed full: a chunk waited {waits.busy:.0f} s for room "
            f"(MODEL_BUSY_DEADLINE_SECONDS is {self.busy_deadline:g}) after "
            f"{waits.busy_answers} queue-full answers to POST {self._url}; {last}",
            status_code=503,
        )

    def _failure_pause(self, retry_after: float | None, tries: int) -> float:
        if retry_after is not None:
            return _jittered(min(retry_after, self.max_retry_after))
        return self._backoff(tries)

    def _backoff(self, n: int) -> float:
        """Exponential backoff with jitter for the ``n``-th pause, capped."""
        exponent = min(n - 1, 30)  # a chunk may try hundreds of times while the tier is full
        delay = self.initial_backoff * 2.0**exponent + random.uniform(0, self.initial_backoff)
        return min(delay, self.max_backoff)

    async def _predict_once(self, pcm: bytes, params: dict[str, str | int]) -> Transcript:
        response = await self._http.post(
            self._url, content=pcm, params=params, headers={"Content-Type": PCM_CONTENT_TYPE}
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(
                status,
                _detail(response),
                parse_retry_after(response.headers.get("Retry-After")),
                busy=is_queue_full(response),
            )
        if status != 200:
            raise ModelServerError(
                f"the model server refused POST {self._url} with HTTP {status}: "
                f"{_detail(response)}",
                status_code=status,
            )
        try:
            return PredictResponse.model_validate_json(response.content).to_transcript()
        except ValidationError as exc:
            raise ModelServerError(
                f"the model server answered POST {self._url} with an unexpected body: {exc}",
                status_code=status,
            ) from exc


def is_queue_full(response: httpx.Response) -> bool:
    """Whether an answer says the model tier is busy rather than broken (module docstring)."""
    if response.status_code == 429:
        return True
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return KNATIVE_QUEUE_FULL in response.text[:200]
    return isinstance(body, dict) and body.get("type") == QUEUE_FULL_TYPE


def _jittered(delay: float) -> float:
    """``delay`` and up to 10 % more, so clients told the same wait spread out a little."""
    return delay + random.uniform(0, delay * 0.1)


def _detail(response: httpx.Response) -> str:
    """The problem+json ``detail`` if there is one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return response.text[:200]
