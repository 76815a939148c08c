"""This replica's row in ``transcriber_replicas``: what it can take and what it runs.

The orchestrator triggers only what these rows have room for, at the replica that has
it (``orchestrator_service.dispatch``), so the row must follow the worker closely:

* written at start, at every change of what the worker runs or takes (a job started
  or ended, shutdown begun: ``version`` is bumped each time, and the trigger's answer
  carries the same state), and every third of ``LEASE_SECONDS`` as a heartbeat: a
  replica not heard from for a lease no longer counts. Writes are at least
  :data:`WRITE_SPACING_SECONDS` apart: a lone change is written at once, a burst of
  them (tens of jobs a second starting and ending) in one write;
* when a slot frees up, the orchestrators are woken (NOTIFY on PostgreSQL, payload
  ``repository.SLOT_FREED``, in the row's own transaction: it arrives with the row
  committed), so the slot is filled at once rather than at the next poll;
* deleted when the replica stops, after its jobs finished or were handed back.

A failed write is logged and tried again at the next change or heartbeat; the jobs'
own leases do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket

from sqlalchemy.ext.asyncio import AsyncEngine

from transcriber_service.model_capacity import ModelCapacity
from transcriber_service.service import Worker
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.repository import replicas
from transcription_core.repository.replicas import ReplicaState

log = logging.getLogger(__name__)

#: Longest wait for the row's deletion at shutdown.
REMOVE_TIMEOUT_SECONDS = 5.0
#: Wait before writing again after a failed write (the next change also retries).
RETRY_SECONDS = 1.0
#: The least time between two writes of the row.
WRITE_SPACING_SECONDS = 0.1


def replica_id() -> str:
    """Unique per process: the host name (a pod's name), the pid and a random tail."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"


def advertised_url(host: str, port: int) -> str:
    """Where a server listening on ``host``:``port`` is reached: that address, or the
    host's own when it listens on every address."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostbyname(socket.gethostname())
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}"


class ReplicaReporter:
    def __init__(
        self,
        engine: AsyncEngine,
        worker: Worker,
        model: ModelCapacity,
        *,
        url: str,
        heartbeat_seconds: float,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.model = model
        self.url = url
        self.heartbeat_seconds = heartbeat_seconds
        self.id = replica_id()
        self.version = 0
        self.started_at = utcnow()
        self._changed = asyncio.Event()
        self._written_free: int | None = None
        #: The fewest free slots since the last write began: a job that started and
        #: ended between two writes (the trigger's answer told the orchestrator its slot
        #: was taken) still frees a slot.
        self._least_free: int | None = None
        self._task: asyncio.Task[None] | None = None
        worker.on_change = self.changed

    def state(self) -> ReplicaState:
        worker = self.worker
        return ReplicaState(
            id=self.id,
            url=self.url,
            slots=worker.settings.worker_max_jobs,
            running=len(worker.active),
            accepting=worker.accepting,
            model_saturated=self.model.saturated,
            version=self.version,
        )

    def _free(self) -> int:
        worker = self.worker
        return worker.settings.worker_max_jobs - len(worker.active) if worker.accepting else 0

    def changed(self) -> None:
        self.version += 1
        free = self._free()
        self._least_free = free if self._least_free is None else min(self._least_free, free)
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-reporter")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            wait = self.heartbeat_seconds
            written_at = loop.time()
            try:
                await self._write()
            except Exception:
                log.exception("could not report this replica", extra={"action": "replica"})
                wait = min(wait, RETRY_SECONDS)
            # asyncio.timeout, not wait_for: in Python 3.11, wait_for loses a cancellation
            # that arrives as the event is set (a shutdown begins with both).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            await asyncio.sleep(max(0.0, written_at + WRITE_SPACING_SECONDS - loop.time()))

    async def _write(self) -> None:
        state = self.state()
        free = self._free()
        least, self._least_free = self._least_free, None
        before = self._written_free
        if before is not None and least is not None:
            before = min(before, least)
        freed = before is not None and free > before
        async with self.engine.begin() as conn:
            await replicas.report(conn, state, self.started_at)
            if freed:
                await repo.notify_slot_freed(conn)
        self._written_free = free

    async def stop(self) -> None:
        """Stop reporting and delete the row (after the worker drained)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(REMOVE_TIMEOUT_SECONDS), self.engine.begin() as conn:
                await replicas.remove(conn, self.id)
        except Exception:
            log.warning(
                "could not remove this replica's row; it ages out", extra={"action": "replica"}
            )
