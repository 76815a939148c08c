"""Errors of the model server.

TranscriptionError                  (transcription_core.errors)
├── ModelConfigError                MODEL names no model we can load (raised at start-up)
└── ProblemError                    rendered as application/problem+json
    ├── InvalidRequest          422
    │   ├── EmptyAudio              the body holds no audio samples
    │   ├── UndecodableAudio        not PCM as declared, or not a media file we can decode
    │   └── UnsupportedLanguage     ``language`` is not a Whisper language code
    ├── PayloadTooLarge         413
    │   └── AudioTooLong            over MAX_CHUNK_SECONDS / MAX_FILE_SECONDS
    └── ServiceUnavailable      503
        ├── ModelNotReady           the model is not loaded (yet, or any more)
        ├── QueueFull               MAX_QUEUED_CHUNKS already wait; carries Retry-After
        └── WorkDiskFull            no room in WORK_DIR for an upload's samples; Retry-After
"""

from __future__ import annotations

from transcription_core.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    TranscriptionError,
)


class ModelConfigError(TranscriptionError):
    """The configured model cannot be found or assembled."""


class EmptyAudio(InvalidRequest):
    type = "/problems/empty-audio"


class UndecodableAudio(InvalidRequest):
    type = "/problems/undecodable-audio"


class UnsupportedLanguage(InvalidRequest):
    type = "/problems/unsupported-language"

    def __init__(self, language: str) -> None:
        super().__init__(
            f"{language!r} is not a Whisper language code",
            errors=[{"field": "language", "message": "not a Whisper language code"}],
        )


class AudioTooLong(PayloadTooLarge):
    type = "/problems/audio-too-long"


class ModelNotReady(ServiceUnavailable):
    type = "/problems/model-not-ready"


class QueueFull(ServiceUnavailable):
    # The transcriber tells "busy" from "broken" by this type (model_client.QUEUE_FULL_TYPE):
    # it waits a full queue out instead of counting it as a failed try.
    type = "/problems/queue-full"

    def __init__(self, queued: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"{queued} audio chunks already wait for the model; try again later",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class WorkDiskFull(ServiceUnavailable):
    """The upload may be fine: the server's WORK_DIR has no room for its decoded samples
    now (other uploads hold it), so the client should come back, not fix its file."""

    type = "/problems/work-disk-full"

    def __init__(self, detail: str, retry_after_seconds: int = 30) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})
