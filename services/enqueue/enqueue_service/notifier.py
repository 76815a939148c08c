"""Tell the orchestrators about new jobs, after their commit, at most once per interval.

A ``NOTIFY`` in the inserting transaction would serialise every enqueue on PostgreSQL's
notification-queue lock, held from commit until the commit is flushed (329 enqueues a
second with it, 1,924 without: bench/results/enqueue-2026-11-24.md). Instead each
committed insert calls :meth:`NewJobNotifier.job_added`, and one task sends a single
``NOTIFY`` for everything added since its last one, then waits ``interval`` (10 ms):
a job is announced within about 10 ms of its commit, and a thousand enqueues a second
cost a hundred notifications. A notification that cannot be sent is not lost work: the
orchestrator's poll finds the job anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class NewJobNotifier:
    def __init__(
        self,
        send: Callable[[], Awaitable[object]],
        interval: float = 0.01,
        retry_seconds: float = 1.0,
    ) -> None:
        self._send = send
        self.interval = interval
        self.retry_seconds = retry_seconds
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def job_added(self) -> None:
        """Called after a job's commit: a NOTIFY follows within ``interval``."""
        self._pending.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="new-job-notifier")

    async def stop(self) -> None:
        """Stop, sending a last notification for anything still pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending.is_set():
            self._pending.clear()
            with contextlib.suppress(Exception):
                await self._send()

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self._send()
            except Exception as exc:  # the store is down: the orchestrator polls meanwhile
                log.warning("could not notify the orchestrators of new jobs: %s", exc)
                self._pending.set()
                await asyncio.sleep(self.retry_seconds)
                continue
            await asyncio.sleep(self.interval)
