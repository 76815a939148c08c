"""Errors of the transcriber's media work, each one a job's ``failure_reason`` and detail.

The worker's job loop catches :class:`JobFailure` around a job's download, decode, chunking
and transcription and records ``failure.reason`` and ``failure.detail`` on the job; whether
the job is tried again follows from the reason alone (``FailureReason.retried``, the
contract's table), so no error here decides retries by itself.

    TranscriptionError                  (transcription_core.errors)
    └── JobFailure                      reason, detail, http_status
        ├── DownloadError               fetching the media URL
        │     DOWNLOAD_FORBIDDEN        401/403, or a URL or redirect we refuse to follow
        │                               (private address, not http(s), credentials)
        │     DOWNLOAD_NOT_FOUND        404/410
        │     DOWNLOAD_FAILED           other HTTP status, timeout, stall, connection or
        │                               DNS failure, too many redirects        (retried)
        │     MEDIA_TOO_LARGE           the body is over the size limit
        └── MediaError                  decoding and chunking the downloaded file
              MEDIA_UNDECODABLE         not media, or corrupt before any audio decodes
              NO_AUDIO_FOUND            no audio stream, or no speech anywhere in it
              MEDIA_TOO_LARGE           the audio is over the duration limit

``detail`` is written for the client who reads ``failure_detail``: it names what went wrong
(and the HTTP status of a download failure) but never a full media URL, whose query string
is usually a signature.
"""

from __future__ import annotations

from transcription_core.errors import TranscriptionError
from transcription_core.status import FailureReason


class JobFailure(TranscriptionError):
    """A job cannot be finished, for a reason in the contract's failure table."""

    def __init__(
        self, reason: FailureReason, detail: str, *, http_status: int | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.http_status = http_status

    @property
    def retried(self) -> bool:
        """Whether the job is tried again after this failure."""
        return self.reason.retried

    def __repr__(self) -> str:
        status = "" if self.http_status is None else f", http_status={self.http_status}"
        return f"{type(self).__name__}({self.reason.value}, {self.detail!r}{status})"


class DownloadError(JobFailure):
    """Fetching the media URL failed; ``http_status`` is the answer's status, if any."""


class MediaError(JobFailure):
    """The downloaded file cannot be turned into speech audio."""


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an unexpected exception, for a ``failure_detail``: short, and
    storable as PostgreSQL text (no NUL, no lone surrogate)."""
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode()
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 3] + "..."
