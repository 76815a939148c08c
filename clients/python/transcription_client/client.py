"""The synchronous client, on ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from transcription_client import _protocol as p
from transcription_client.errors import TransportError, WaitTimeout
from transcription_client.models import Job, JobPage, JobStatus, TextFormat, Transcript


class Client:
    """The transcription service's API for one API key (one tenant).

    ``base_url`` is the enqueue service's address (``http://127.0.0.1:8000`` on a local
    run). ``http`` is an ``httpx.Client`` of your own (a proxy, a transport, limits); the
    client then leaves closing it to you. Errors are the classes of
    :mod:`transcription_client.errors`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = p.request_headers(api_key)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(
        self,
        media_url: str,
        webhook_url: str,
        *,
        external_id: str | None = None,
        language: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue a job (``POST /v1/jobs``); it starts ``QUEUED``.

        With ``idempotency_key``, sending the same request again (after a timeout, say)
        within 24 h returns the job first created and creates nothing; the same key with
        another body is :class:`~transcription_client.errors.Conflict`. ``options`` are
        the job options, sent as they are: ``word_timestamps=True``, ``task="translate"``,
        ``prompt=...``, and any the service adds.
        """
        call = p.create_call(
            media_url,
            webhook_url,
            external_id=external_id,
            language=language,
            metadata=metadata,
            idempotency_key=idempotency_key,
            options=options,
        )
        return p.read_job(self._send(call))

    def get(self, job_id: str) -> Job:
        """One job, its transcript included once there is one."""
        return p.read_job(self._send(p.Call("GET", p.job_path(job_id))))

    def list_page(
        self,
        *,
        status: JobStatus | str | None = None,
        external_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass its ``next_cursor`` as ``cursor``."""
        call = p.list_call(status=status, external_id=external_id, limit=limit, cursor=cursor)
        return p.read_page(self._send(call))

    def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        external_id: str | None = None,
        page_size: int = p.MAX_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Every job that matches, newest first, fetching page after page as you go."""
        cursor: str | None = None
        while True:
            page = self.list_page(
                status=status, external_id=external_id, limit=page_size, cursor=cursor
            )
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def transcript(self, job_id: str) -> Transcript:
        """The transcript (``format=json``); :class:`~transcription_client.errors.Conflict`
        until the job has one."""
        return p.read_transcript(self._send(p.transcript_call(job_id, "json", {})))

    def transcript_text(self, job_id: str, format: TextFormat = "text", **params: str | int) -> str:
        """The transcript as ``text``, ``srt`` or ``vtt``. ``params`` go into the query as
        they are (for captions: ``max_line_chars=42, max_lines=2``)."""
        p.check_text_format(format)
        return p.read_text(self._send(p.transcript_call(job_id, format, params)))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished; it becomes ``CANCELED``."""
        return p.read_job(self._send(p.Call("POST", p.job_path(job_id, "cancel"))))

    def redeliver(self, job_id: str) -> Job:
        """Send the job's webhook again, with the same ``webhook-id`` as the first."""
        return p.read_job(self._send(p.Call("POST", p.job_path(job_id, "redeliver"))))

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its transcript now."""
        self._send(p.Call("DELETE", p.job_path(job_id)))

    def wait(self, job_id: str, *, timeout: float = 600.0, poll_interval: float = 1.0) -> Job:
        """Poll the job until it is ``SUCCEEDED``, ``PERMAFAILED`` or ``CANCELED`` and
        return it; :class:`~transcription_client.errors.WaitTimeout` (with the last job
        read) if that takes longer than ``timeout`` seconds. A webhook tells you the same
        without polling: prefer it in a server."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.terminal:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job, timeout)
            time.sleep(min(poll_interval, left))

    def _send(self, call: p.Call) -> httpx.Response:
        try:
            response = self._http.request(
                call.method,
                self._base_url + call.path,
                params=call.params,
                json=call.json,
                headers={**self._headers, **(call.headers or {})},
            )
        except httpx.TransportError as exc:
            raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
        return p.checked(response)
