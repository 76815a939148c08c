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
    retention_days: float = Field(
        30.0,
        ge=0,
        description="Finished jobs (SUCCEEDED, PERMAFAILED, CANCELED) are deleted with their "
        "events, chunks, transcript and webhook payload this many days after they finished "
        "(0: kept forever). Clients delete one at once with `DELETE /v1/jobs/{id}`.",
    )
    retention_interval_seconds: float = Field(
        300.0, gt=0, description="How often the orchestrator deletes the jobs past retention."
    )
    retention_batch_size: int = Field(
        500,
        ge=1,
        description="Jobs deleted per transaction by retention: small, so no lock is held long.",
    )
    retention_max_batches: int = Field(
        100,
        ge=1,
        description="Most transactions of one retention run; what is left waits for the next "
        "run (100 x 500 every 5 minutes: 10,000 jobs a minute at most).",
    )


@lru_cache
def get_settings() -> OrchestratorSettings:
    return OrchestratorSettings()
