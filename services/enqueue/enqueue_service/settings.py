"""Settings of the enqueue service (the client API)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from transcription_core.settings import (
    DatabaseSettings,
    DiarizationSettings,
    ServedModelSettings,
    UrlPolicySettings,
)


class EnqueueSettings(
    DatabaseSettings, UrlPolicySettings, ServedModelSettings, DiarizationSettings
):
    max_request_bytes: int = Field(
        65_536, ge=1024, description="Largest request body the API accepts (413 above it)."
    )
    max_metadata_bytes: int = Field(
        16_384, ge=0, description="Largest `metadata` object, as compact JSON."
    )
    max_metadata_depth: int = Field(
        32,
        ge=1,
        le=200,
        description="Deepest nesting of objects and arrays in `metadata` (`{}` is 1 level); "
        "deeper is refused with 422 before anything is written.",
    )
    request_read_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="A request must arrive whole (request line, headers and body) within "
        "this many seconds of its first byte, or of the connection: a client that sends "
        "slowly gets 408 and the connection is closed. `transcription serve` only.",
    )
    max_request_head_bytes: int = Field(
        65_536,
        ge=4096,
        description="Largest request line plus headers (431 and the connection closed "
        "above it). `transcription serve` only.",
    )
    http_keep_alive_seconds: int = Field(
        5,
        ge=1,
        description="An idle kept-alive connection is closed after this many seconds "
        "(uvicorn's `timeout_keep_alive`).",
    )
    http_limit_concurrency: int = Field(
        1000,
        ge=0,
        description="Connections plus requests in flight per process beyond which new "
        "requests are answered 503 (uvicorn's `limit_concurrency`; 0: no limit).",
    )
    http_worker_healthcheck_seconds: int = Field(
        60,
        ge=1,
        description="With `--workers` above 1: a worker process that does not answer "
        "uvicorn's health check within this many seconds is replaced (uvicorn's "
        "`timeout_worker_healthcheck`; its start-up counts, so a busy node needs room).",
    )
    api_key_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="How long a verified API key is remembered in memory (0: look up every "
        "request). A revoked key stops working within this time.",
    )
    max_prompt_chars: int = Field(
        1000,
        ge=0,
        le=4000,
        description="Longest `prompt`, and longest `hotwords`, a job may give (422 above). "
        "Whisper reads at most 223 tokens of them (about 900 characters of English) and "
        "drops the start of a longer one.",
    )
    idempotency_window_hours: float = Field(
        24.0, gt=0, description="How long an `Idempotency-Key` returns the job it created."
    )


@lru_cache
def get_settings() -> EnqueueSettings:
    return EnqueueSettings()
