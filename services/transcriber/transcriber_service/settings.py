"""Settings of the transcriber (the worker)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from transcription_core.settings import (
    DatabaseSettings,
    DiarizationSettings,
    JobPolicySettings,
    UrlPolicySettings,
    WorkDirSettings,
)


class TranscriberSettings(
    DatabaseSettings, UrlPolicySettings, JobPolicySettings, DiarizationSettings, WorkDirSettings
):
    model_server_url: str = Field(
        "http://127.0.0.1:8003", description="Base URL of the model server."
    )
    worker_max_jobs: int = Field(
        2,
        ge=1,
        description="Jobs one transcriber replica works on at once; a trigger beyond it gets "
        "503 and the job goes back to the queue. Match Knative's containerConcurrency.",
    )
    advertise_url: str = Field(
        "",
        description="The URL at which the orchestrator reaches this replica, reported in "
        "its row of `transcriber_replicas`: on Kubernetes `http://$(POD_IP):8080`. Empty: "
        "`transcription serve` reports the address it listens on (the host's address "
        "when it listens on all of them).",
    )
    max_download_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest media file downloaded (MEDIA_TOO_LARGE above)."
    )
    max_media_seconds: float = Field(
        4 * 3600.0, gt=0, description="Longest media transcribed (MEDIA_TOO_LARGE above)."
    )
    download_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="Media connect timeout."
    )
    download_read_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for the next bytes of the media (a stall fails)."
    )
    download_max_redirects: int = Field(
        5, ge=0, description="Redirects a media URL may take (DOWNLOAD_FAILED beyond)."
    )
    download_total_timeout_seconds: float = Field(
        1800.0, gt=0, description="Longest a whole media download may take."
    )
    download_min_bytes_per_second: float = Field(
        64 * 1024.0,
        ge=0,
        description="Slowest media download kept going: a body that brings fewer than this "
        "many bytes a second over DOWNLOAD_MIN_RATE_WINDOW_SECONDS fails as DOWNLOAD_FAILED "
        "(too slow). A body that ends within its first window is never judged. 0 turns the "
        "check off.",
    )
    download_min_rate_window_seconds: float = Field(
        60.0,
        gt=0,
        description="The window over which DOWNLOAD_MIN_BYTES_PER_SECOND is measured: the "
        "longest a download may go on under the minimum rate.",
    )
    chunk_concurrency: int = Field(
        16,
        ge=1,
        description="Chunks of one job in flight to the model server at once: one model server "
        "replica's worth on a GPU (MAX_BATCH_SIZE x MODEL_WORKERS, 4 x 4 in the manifests), "
        "twice a CPU replica's default batch of 8, so the next batch fills while one decodes. "
        "A replica sends "
        "at most this x WORKER_MAX_JOBS, halved at each queue-full answer and grown back "
        "by one per window of successes (AIMD).",
    )
    context_lanes: int = Field(
        0,
        ge=0,
        le=64,
        description="Context across chunk cuts: a job's chunks are split into this many "
        "runs of neighbouring chunks (lanes), decoded side by side; within a lane each "
        "chunk is sent when the one before it is done, with that chunk's segments "
        "(timestamps and text, up to 500 characters) as its context, as Whisper "
        "conditions each window on the one before. Fewer lanes: more context, less "
        "batching within a lone job (other jobs' chunks still batch with them). 0: every "
        "chunk at once without context. CHUNK_CONCURRENCY bounds both.",
    )
    model_request_timeout_seconds: float = Field(
        300.0, gt=0, description="Timeout of one chunk request to the model server."
    )
    model_request_attempts: int = Field(
        5,
        ge=1,
        description="Tries per chunk while the model server fails (5xx other than queue full, "
        "connection refused, timeouts; exponential backoff with jitter, honouring "
        "Retry-After) before the job fails with MODEL_ERROR. An invalid answer fails at "
        "once; a queue-full answer spends no try (MODEL_BUSY_DEADLINE_SECONDS).",
    )
    model_busy_deadline_seconds: float = Field(
        900.0,
        gt=0,
        description="How long one chunk may wait for the model tier once it answered queue "
        "full (a 429, or a 503 queue-full from the model server or Knative), waiting "
        "Retry-After between tries, before the job fails with MODEL_ERROR. Such waits "
        "spend no attempt; the job's lease stays alive meanwhile.",
    )
    beam_size: int = Field(5, ge=1, le=20, description="Beam size asked of the model server.")
    max_channels: int = Field(
        8,
        ge=1,
        le=64,
        description="Most audio channels a `multichannel` job transcribes, each on its own "
        "(each costs a decode and a transcription of the whole media); media with more "
        "fails as MEDIA_TOO_LARGE.",
    )
    diarize_max_speakers: int = Field(
        16,
        ge=1,
        le=32,
        description="Most speakers a `diarize` job's transcript is labelled with, whatever "
        "its `speakers` or `max_speakers` (the clustering keeps the ones who speak most).",
    )
    diarize_concurrency: int = Field(
        1,
        ge=1,
        description="Jobs of one replica whose speakers are found at once (each in a thread, "
        "DIARIZE_THREADS cores each, about 3 CPU s per minute of audio); more wait. The "
        "speaker model is loaded once per replica, at the first `diarize` job (about 100 MB "
        "of memory with PyTorch).",
    )
    diarize_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="CPU threads PyTorch's speaker model uses in each replica.",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="One deadline for a whole webhook exchange: resolving the receiver's "
        "host, connecting, sending and its answer. A 2xx within it is delivered; anything "
        "else, a slow drip included, is a failed delivery.",
    )
    webhook_response_max_bytes: int = Field(
        512,
        ge=0,
        description="Most bytes of a webhook receiver's answer read: none of a 2xx, this much "
        "of any other (kept in failure_detail); the rest is never read.",
    )
    shutdown_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="On shutdown, how long running jobs may finish before they are handed "
        "back (FAILED with WORKER_LOST, due at once). Keep it under the pod's grace period.",
    )


@lru_cache
def get_settings() -> TranscriberSettings:
    return TranscriberSettings()
