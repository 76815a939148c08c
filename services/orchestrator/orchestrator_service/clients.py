"""The orchestrator's client of the transcriber's trigger endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class TriggerResult:
    accepted: bool
    detail: str


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
        return TriggerResult(False, f"trigger refused: transcriber answered {response.status_code}")
