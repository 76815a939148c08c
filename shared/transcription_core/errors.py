"""The project's errors: one root, :class:`TranscriptionError`, and the whole tree below.

A client error knows its HTTP status and problem type (``status_code``, ``type``) and is
rendered as application/problem+json by ``http.py``; the others never reach a client.
Each class is named with the module that defines it, where that is not this one; the
tree is the code's (``tests/unit/test_errors.py`` checks it).

TranscriptionError
├── ProblemError                 500 rendered as application/problem+json by the services
│   ├── Unauthorized             401 missing or unknown API key
│   ├── NotFound                 404 no such job for this tenant
│   ├── Conflict                 409 e.g. an Idempotency-Key reused with another body
│   │   └── InvalidTransition    409 (transcription_core.status) a move the status machine forbids
│   ├── PayloadTooLarge          413 request body over the limit
│   │   └── AudioTooLong         413 (model_server.errors) over the model server's duration limits
│   ├── InvalidRequest           422 the body or a parameter is invalid
│   │   ├── UnsafeUrl            422 (transcription_core.urls) a URL we refuse to fetch or post to
│   │   ├── EmptyAudio           422 (model_server.errors) the body holds no audio samples
│   │   ├── UndecodableAudio     422 (model_server.errors) not audio we can decode
│   │   └── UnsupportedLanguage  422 (model_server.errors) not a Whisper language code
│   └── ServiceUnavailable       503 e.g. the database cannot be reached
│       ├── ModelNotReady        503 (model_server.errors) the model is not loaded
│       ├── QueueFull            503 (model_server.errors) too many chunks wait; Retry-After
│       └── WorkDiskFull         503 (model_server.errors) no room in WORK_DIR; Retry-After
├── DuplicateIdempotencyKey      the unique (tenant, idempotency_key) constraint fired
├── TenantExists                 ``tenants create`` with a name already taken
├── JobFailure                   (transcriber_service.errors) a job's failure reason and detail
│   ├── DownloadError            (transcriber_service.errors) fetching the media URL
│   └── MediaError               (transcriber_service.errors) decoding the media
├── ModelServerError             (transcriber_service.model_client) a chunk failed for good
├── _Retryable                   (transcriber_service.model_client) a retryable answer
├── LeaseLost                    (transcriber_service.service) another writer moved the job
├── AudioError                   (transcription_core.audio.decode) media that gives no audio
│   └── TooLong                  (transcription_core.audio.pcm_file) over the duration limit
└── ModelConfigError             (model_server.errors) MODEL names no model we can load
"""

from __future__ import annotations

from typing import Any


class TranscriptionError(Exception):
    """Root of every error this project raises on purpose."""


class ProblemError(TranscriptionError):
    status_code = 500
    title = "Internal Server Error"
    type = "about:blank"

    def __init__(
        self,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(ProblemError):
    status_code = 401
    title = "Unauthorized"
    type = "/problems/unauthorized"


class NotFound(ProblemError):
    status_code = 404
    title = "Not Found"
    type = "/problems/not-found"


class Conflict(ProblemError):
    status_code = 409
    title = "Conflict"
    type = "/problems/conflict"


class PayloadTooLarge(ProblemError):
    status_code = 413
    title = "Payload Too Large"
    type = "/problems/payload-too-large"


class InvalidRequest(ProblemError):
    status_code = 422
    title = "Unprocessable Content"
    type = "/problems/validation"


class ServiceUnavailable(ProblemError):
    status_code = 503
    title = "Service Unavailable"
    type = "/problems/unavailable"


class DuplicateIdempotencyKey(TranscriptionError):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} is taken")
        self.key = key


class TenantExists(TranscriptionError):
    pass
