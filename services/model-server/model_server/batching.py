"""The batcher: chunks from concurrent requests, decoded together in one model call.

Requests :meth:`Batcher.submit` a chunk and await its result. A worker task forms
batches: it takes the oldest waiting chunk, adds the next ones that share its
:class:`~model_server.decoding.BatchOptions` (up to ``max_batch_size``), and waits for
more until the oldest chunk has waited ``max_wait`` — or not at all when the batch is
full. The batch runs in a thread of the worker's own, so the event loop never blocks.
``workers`` (``MODEL_WORKERS``) such workers run batches at once, each its own (the
model takes as many calls at once: CTranslate2's ``num_workers``); with one, the model
runs one batch at a time. At most ``max_queued`` chunks wait (the running batches not
counted); one more is refused with :class:`~model_server.errors.QueueFull` at once, so
the queue never grows without bound and the client knows to come back later.

A batch that fails is retried chunk by chunk, so one bad chunk fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from model_server.decoding import BatchOptions, ChunkRequest
from model_server.errors import ModelNotReady, QueueFull
from transcription_core.transcript import Transcript

logger = logging.getLogger(__name__)

DecodeFn = Callable[[Sequence[ChunkRequest], BatchOptions], list[Transcript]]


class BatchObserver(Protocol):
    """What the batcher reports (the service's metrics)."""

    def queue_depth(self, queued: int) -> None: ...

    def rejected(self) -> None: ...

    def batch_done(
        self, size: int, audio_seconds: float, compute_seconds: float, latencies: list[float]
    ) -> None: ...


@dataclass(eq=False)
class _Waiting:
    request: ChunkRequest
    options: BatchOptions
    future: asyncio.Future[Transcript]
    enqueued_at: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        decode: DecodeFn,
        *,
        max_batch_size: int,
        max_wait_seconds: float,
        max_queued: int,
        retry_after_seconds: int = 1,
        observer: BatchObserver | None = None,
        workers: int = 1,
    ) -> None:
        self.decode = decode  # blocking; runs in a worker's thread
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queued = max_queued
        self.retry_after_seconds = retry_after_seconds
        self._observer = observer
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.batches_run = 0

    @property
    def queued(self) -> int:
        """Chunks waiting for the model (not counting the batch being decoded)."""
        return len(self._waiting)

    @property
    def running(self) -> bool:
        return any(not worker.done() for worker in self._workers)

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="model-batch")
        self._workers = [
            asyncio.create_task(self._run(), name=f"model-batcher-{n}") for n in range(self.workers)
        ]

    async def stop(self) -> None:
        """Stop forming batches; the running ones finish, waiting chunks get 503."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(ModelNotReady("the model server is shutting down"))
        self._report_depth()
        self._room.set()  # wake submitters waiting for room: they find no worker
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, request: ChunkRequest, options: BatchOptions, *, wait_for_room: bool = False
    ) -> Transcript:
        """Decode one chunk in a batch of chunks with the same ``options``.

        When ``max_queued`` chunks already wait this raises :class:`QueueFull` at once,
        or, with ``wait_for_room``, waits until a batch leaves the queue (for the later
        pieces of a file whose first pieces were admitted).
        """
        while True:
            if not self.running:
                raise ModelNotReady("the model is not loaded")
            if len(self._waiting) < self.max_queued:
                break
            if not wait_for_room:
                if self._observer is not None:
                    self._observer.rejected()
                raise QueueFull(len(self._waiting), self.retry_after_seconds)
            self._room.clear()
            await self._room.wait()
        waiting = _Waiting(request, options, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._report_depth()
        self._arrived.set()
        try:
            return await waiting.future
        finally:
            if waiting in self._waiting:  # cancelled while waiting: free its place
                self._waiting.remove(waiting)
                self._report_depth()
                self._room.set()

    # -- the worker -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._form_batch()
            if batch:
                await self._execute(batch)

    async def _form_batch(self) -> list[_Waiting]:
        while self._waiting:
            oldest = self._waiting[0]
            same = [w for w in self._waiting if w.options == oldest.options]
            same = same[: self.max_batch_size]
            remaining = oldest.enqueued_at + self.max_wait_seconds - time.monotonic()
            if len(same) >= self.max_batch_size or remaining <= 0:
                for waiting in same:
                    self._waiting.remove(waiting)
                self._report_depth()
                self._room.set()
                return [w for w in same if not w.future.done()]
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return []

    async def _execute(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        options = batch[0].options
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self.decode, [w.request for w in batch], options
            )
        except asyncio.CancelledError:
            for waiting in batch:
                _fail(waiting.future, ModelNotReady("the model server is shutting down"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                logger.exception("decoding a chunk failed", extra={"action": "batch_failed"})
                _fail(batch[0].future, exc)
                return
            logger.warning(
                "a batch of %d failed (%s); decoding its chunks one by one",
                len(batch),
                exc,
                extra={"action": "batch_split"},
            )
            for waiting in batch:
                await self._execute([waiting])
            return
        compute = time.perf_counter() - started
        self.batches_run += 1
        now = time.monotonic()
        for waiting, result in zip(batch, results, strict=True):
            _resolve(waiting.future, result)
        if self._observer is not None:
            self._observer.batch_done(
                len(batch),
                sum(w.request.duration for w in batch),
                compute,
                [now - w.enqueued_at for w in batch],
            )

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(len(self._waiting))


def _resolve(future: asyncio.Future[Transcript], result: Transcript) -> None:
    if not future.done():  # done: its request went away
        future.set_result(result)


def _fail(future: asyncio.Future[Transcript], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
