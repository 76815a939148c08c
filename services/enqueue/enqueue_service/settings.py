"""Settings of the enqueue service (the client API)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from transcription_core.settings import DatabaseSettings, UrlPolicySettings


class EnqueueSettings(DatabaseSettings, UrlPolicySettings):
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
    api_key_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="How long a verified API key is remembered in memory (0: look up every "
        "request). A revoked key stops working within this time.",
    )
    idempotency_window_hours: float = Field(
        24.0, gt=0, description="How long an `Idempotency-Key` returns the job it created."
    )


@lru_cache
def get_settings() -> EnqueueSettings:
    return EnqueueSettings()
