"""Settings of the model server, read from environment variables.

Only :func:`get_settings` reads the environment (once, cached); tests pass their own
:class:`ModelServerSettings` to ``create_app`` instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from transcription_core.settings import ServedModelSettings, WorkDirSettings

DEFAULT_MODEL_CACHE_DIR = Path("~/.cache/transcription/models")


class ModelServerSettings(ServedModelSettings, WorkDirSettings):
    # ``model_*`` names are ours, not pydantic's: lift its protected namespace.
    model_config = SettingsConfigDict(protected_namespaces=())
    model_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the model runs. `auto` picks CUDA when CTranslate2 sees a GPU, "
        "else the CPU.",
    )
    model_compute_type: str = Field(
        "default",
        min_length=1,
        description="CTranslate2 compute type (`int8`, `int8_float16`, `float16`, "
        "`float32`, ...). `default` means `int8` on CPU and `float16` on CUDA.",
    )
    model_cpu_threads: int = Field(
        0, ge=0, description="CPU threads per model call; 0 leaves CTranslate2's default."
    )
    model_workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Batches decoded at once (CTranslate2 workers, each with "
        "`MODEL_CPU_THREADS` threads; the weights are shared, each worker has its own "
        "buffers). 1: one batch at a time. The model server's queue feeds them all; "
        "Knative's `containerConcurrency` should be `MAX_BATCH_SIZE` x this. On an H200, "
        "4 workers of batches of 4 served 2.3 x one batch of 8 (bench/README.md, gpu).",
    )
    model_cache_dir: Path = Field(
        DEFAULT_MODEL_CACHE_DIR,
        description="Where models that ship in parts (`base`) are assembled, once.",
    )
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Most audio chunks decoded together in one model call."
    )
    batch_wait_ms: float = Field(
        10.0,
        ge=0,
        description="Longest time a chunk waits for others to fill its batch before the "
        "batch runs anyway.",
    )
    max_queued_chunks: int = Field(
        64,
        ge=1,
        description="Chunks that may wait for the model at once; past that, requests are "
        "answered 503 with Retry-After.",
    )
    queue_full_retry_after_seconds: int = Field(
        1, ge=0, description="The Retry-After (seconds) of a 503 answered when the queue is full."
    )
    max_upload_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1,
        description="Largest request body the model server accepts (a chunk, or a file sent to "
        "`/v1/audio/transcriptions`); larger ones are answered 413.",
    )
    max_chunk_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest audio accepted by `/v1/predict`. The transcriber sends chunks "
        "of at most 30 s; longer ones are decoded window by window, holding the model. A file "
        "declaring more is refused (413) before decoding; decoding stops at it.",
    )
    max_file_seconds: float = Field(
        4 * 3600.0,
        gt=0,
        description="Longest audio accepted by `/v1/audio/transcriptions` and "
        "`/v1/audio/translations`. A file declaring more is refused (413) before decoding, and "
        "decoding stops at it. The audio is decoded to a PCM file in `WORK_DIR` (32 KB a "
        "second of it: 4 h, 461 MB of disk) and read back a batch of chunks at a time, so a "
        "request's memory does not grow with it.",
    )
    max_concurrent_files: int = Field(
        8,
        ge=1,
        description="Files of `/v1/audio/transcriptions` and `/v1/audio/translations` decoded "
        "and transcribed at once; more wait their turn. Bounds their disk in `WORK_DIR`: this "
        "x `MAX_FILE_SECONDS` x 32 KB (8 x 4 h: 3.7 GB).",
    )


@lru_cache
def get_settings() -> ModelServerSettings:
    return ModelServerSettings()
