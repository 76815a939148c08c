"""The client's errors: one root, :class:`TranscriptionClientError`, and the tree below.

An answer of the API that is not 2xx is an :class:`ApiError` read from its RFC 9457
problem+json body (``type``, ``title``, ``status``, ``detail`` and, for a validation
error, ``errors``), of the class its status names::

    TranscriptionClientError
    ├── ApiError                 any answer that is not 2xx (a status not listed below)
    │   ├── BadRequest           400 the body could not be parsed
    │   ├── Unauthorized         401 missing or unknown API key
    │   ├── NotFound             404 no such job for this key's tenant
    │   ├── Conflict             409 an Idempotency-Key reused with another body; no
    │   │                            transcript yet; a job that cannot be canceled
    │   ├── PayloadTooLarge      413 the request body is over the service's limit
    │   ├── ValidationError      422 the body or a parameter is invalid (``field_errors``)
    │   └── ServerError          5xx
    │       └── ServiceUnavailable  503 e.g. the job store is out of reach (``retry_after``)
    ├── TransportError           no answer: the connection failed or timed out
    ├── UnexpectedResponse       a 2xx answer, or a verified webhook, that is not what
    │                            the API sends (a client older than the service?)
    ├── WaitTimeout              ``wait()`` ran out of time; ``job`` is the last one read
    └── WebhookVerificationError the webhook's signature or timestamp does not verify
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from transcription_client.models import Job


class TranscriptionClientError(Exception):
    """Root of every error this client raises."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a validation problem's ``errors``: which field, and what is wrong."""

    field: str
    message: str


class ApiError(TranscriptionClientError):
    """The API answered with an error: the problem+json body, read."""

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        field_errors: list[FieldError] | None = None,
        problem: dict[str, Any] | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.field_errors = field_errors or []
        #: The whole problem body, extension members included.
        self.problem = problem or {}
        self.headers = headers or httpx.Headers()


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class ValidationError(ApiError):
    pass


class ServerError(ApiError):
    pass


class ServiceUnavailable(ServerError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the service asks to wait (its ``Retry-After``, in seconds), if it said."""
        try:
            return float(self.headers["retry-after"])
        except (KeyError, ValueError):
            return None


class TransportError(TranscriptionClientError):
    """No answer from the API: the connection failed or timed out (``__cause__`` is
    httpx's error)."""


class UnexpectedResponse(TranscriptionClientError):
    """A 2xx answer, or a verified webhook, the client cannot read as what the API sends."""


class WaitTimeout(TranscriptionClientError):
    """The job did not reach a terminal status within ``wait()``'s timeout."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout} s")
        self.job = job
        self.timeout = timeout


class WebhookVerificationError(TranscriptionClientError):
    """A webhook that does not verify: answer it 4xx and do not act on it."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    503: ServiceUnavailable,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` for a non-2xx answer; its body should be problem+json, but
    a proxy's HTML page in front of the service still gives an error of the right class."""
    status = response.status_code
    problem: dict[str, Any] = {}
    try:
        body = json.loads(response.content)
        if isinstance(body, dict):
            problem = body
    except ValueError:
        pass
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    errors = problem.get("errors")
    field_errors = [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    detail = problem.get("detail")
    if detail is None and not problem:
        detail = response.text[:200]
    return cls(
        status,
        type=str(problem.get("type", "about:blank")),
        title=str(problem.get("title", response.reason_phrase)),
        detail=str(detail or ""),
        field_errors=field_errors,
        problem=problem,
        headers=response.headers,
    )
