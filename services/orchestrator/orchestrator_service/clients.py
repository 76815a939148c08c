"""The orchestrator's client of the transcribers' trigger endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from transcription_core.repository.replicas import ReplicaAnswer, ReplicaState
from transcription_core.retry_after import parse_retry_after

#: How long a refused or failed trigger's job waits before it is claimed again, when
#: the transcriber does not say (Retry-After).
DEFAULT_RETRY_AFTER_SECONDS = 1.0
#: Most bytes of a trigger's answer read (the replica's state is a few dozen).
MAX_ANSWER_BYTES = 4096


@dataclass(frozen=True)
class TriggerResult:
    accepted: bool
    detail: str
    retry_after: float = DEFAULT_RETRY_AFTER_SECONDS
    #: The replica's state after it answered, when it said.
    replica: ReplicaState | None = None
    #: False when no answer came (connection refused, reset, timed out).
    reached: bool = True


class TranscriberClient:
    """``POST {url}/v1/triggers`` with ``{"job_id", "attempt"}``: 202 means taken."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def trigger(self, url: str, job_id: str, attempt: int) -> TriggerResult:
        endpoint = url.rstrip("/") + "/v1/triggers"
        try:
            async with self._http.stream(
                "POST", endpoint, json={"job_id": job_id, "attempt": attempt}
            ) as response:
                body = b""
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > MAX_ANSWER_BYTES:
                        break
        except httpx.HTTPError as exc:
            return TriggerResult(
                False, f"trigger failed: {type(exc).__name__}: {exc}", reached=False
            )
        replica = _replica(body)
        if response.status_code == 202:
            return TriggerResult(True, "accepted", replica=replica)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TriggerResult(
            False,
            f"trigger refused: transcriber answered {response.status_code}",
            DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else min(retry_after, 60.0),
            replica=replica,
        )


def _replica(body: bytes) -> ReplicaState | None:
    if not body or len(body) > MAX_ANSWER_BYTES:
        return None
    try:
        return ReplicaAnswer.model_validate_json(body).state()
    except ValidationError:
        return None
