"""Errors of the job core, each a leaf of :class:`TranscriptionError`.

TranscriptionError
├── ProblemError                 rendered as application/problem+json by the services
│   ├── Unauthorized             401 missing or unknown API key
│   ├── NotFound                 404 no such job for this tenant
│   ├── Conflict                 409 e.g. an Idempotency-Key reused with another body
│   ├── PayloadTooLarge          413 request body over the limit
│   ├── InvalidRequest           422 the body or a parameter is invalid
│   └── ServiceUnavailable       503 e.g. the database cannot be reached
├── DuplicateIdempotencyKey      the unique (tenant, idempotency_key) constraint fired
├── TenantExists                 ``tenants create`` with a name already taken
└── InvalidTransition            (status.py) a move the status machine forbids
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
