"""The orchestrator's client of the transcriber's trigger endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from transcription_core.retry_after import parse_retry_after

#: How long a refused or failed trigger's job waits before it is claimed again, when
#: the transcriber does not say (Retry-After).
DEFAULT_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class TriggerResult:
    accepted: bool
    detail: str
    retry_after: float = DEFAULT_RETRY_AFTER_SECONDS


class TranscriberClient:
    """``POST {base_url}/v1/triggers`` with ``{"job_id", "attempt"}``: 202 means taken."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/v1/triggers"

    async def trigger(self, job_id: str, attempt: int) -> TriggerResult:
        try:
            response = await self._http.post(self._url, json={"job_id": job_id, "attempt": attempt})
        except httpx.HTTPError as exc:
            return TriggerResult(False, f"trigger failed: {type(exc).__name__}: {exc}")
        if response.status_code == 202:
            return TriggerResult(True, "accepted")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TriggerResult(
            False,
            f"trigger refused: transcriber answered {response.status_code}",
            DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else min(retry_after, 60.0),
        )
