"""Settings of the orchestrator."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from transcription_core.settings import DatabaseSettings, JobPolicySettings


class OrchestratorSettings(DatabaseSettings, JobPolicySettings):
    max_concurrent_transcription_jobs: int = Field(
        10,
        ge=0,
        description="The budget: how many jobs may be TRIGGERED or PROCESSING at once, "
        "across all replicas. Within it, the orchestrator triggers only what the "
        "transcriber replicas report room for. `transcription limit set N` overrides it "
        "at run time without a redeploy.",
    )
    transcriber_url: str = Field(
        "http://127.0.0.1:8002",
        description="Where triggers go for a transcriber replica that reported no URL of "
        "its own (ADVERTISE_URL); a replica that did is triggered at its own.",
    )
    poll_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest sleep between rounds: the fallback when no notification comes "
        "(always on SQLite; on PostgreSQL only if LISTEN is lost).",
    )
    trigger_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one trigger request to the transcriber."
    )
    claim_batch_size: int = Field(100, ge=1, description="Most jobs claimed in one round.")


@lru_cache
def get_settings() -> OrchestratorSettings:
    return OrchestratorSettings()
