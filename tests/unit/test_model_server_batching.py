"""The batcher, with a stand-in for the model: grouping, limits, back-pressure, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from model_server.batching import Batcher
from model_server.decoding import BatchOptions, ChunkRequest
from model_server.errors import ModelNotReady, QueueFull
from transcription_core.transcript import Transcript


class FakeModel:
    """Records each batch; can hold the worker until released, or fail on a marked chunk."""

    def __init__(self) -> None:
        self.batches: list[list[ChunkRequest]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def hold(self) -> None:
        self.release.clear()

    def decode(self, requests: Sequence[ChunkRequest], options: BatchOptions) -> list[Transcript]:
        self.entered.set()
        assert self.release.wait(timeout=10)
        self.batches.append(list(requests))
        if any(r.initial_prompt == "fail" for r in requests):
            raise RuntimeError("bad chunk")
        return [
            Transcript([], r.language or "en", float(options.beam_size), r.duration)
            for r in requests
        ]


def chunk(seconds: float = 1.0, **options: object) -> ChunkRequest:
    return ChunkRequest(np.zeros(int(seconds * 16_000), dtype=np.float32), **options)  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll the batcher's state (its worker thread changes it) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
async def batcher(model: FakeModel) -> AsyncIterator[Batcher]:
    batcher = Batcher(model.decode, max_batch_size=3, max_wait_seconds=0.0, max_queued=4)
    batcher.start()
    yield batcher
    model.release.set()
    await batcher.stop()


async def hold_worker(batcher: Batcher, model: FakeModel) -> asyncio.Task[Transcript]:
    """Occupy the worker with one chunk until ``model.release`` is set."""
    model.hold()
    blocker = asyncio.create_task(batcher.submit(chunk(), BatchOptions()))
    await asyncio.to_thread(model.entered.wait, 10)
    return blocker


async def test_waiting_chunks_with_the_same_options_share_a_batch(
    batcher: Batcher, model: FakeModel
) -> None:
    blocker = await hold_worker(batcher, model)
    tasks = [asyncio.create_task(batcher.submit(chunk(), BatchOptions())) for _ in range(3)]
    await until(lambda: batcher.queued == 3)
    model.release.set()
    await asyncio.gather(blocker, *tasks)
    assert [len(b) for b in model.batches] == [1, 3]


async def test_batches_never_exceed_max_batch_size_nor_mix_options(
    batcher: Batcher, model: FakeModel
) -> None:
    blocker = await hold_worker(batcher, model)
    beam5, beam1 = BatchOptions(beam_size=5), BatchOptions(beam_size=1)
    tasks = [
        asyncio.create_task(batcher.submit(chunk(language=lang), options))
        for lang, options in [("en", beam5), ("de", beam1), ("fr", beam5), ("es", beam5)]
    ]
    await until(lambda: batcher.queued == 4)
    model.release.set()
    results = await asyncio.gather(*tasks)
    await blocker
    # Each result comes back to its own request, with its own options.
    assert [(r.language, r.language_probability) for r in results] == [
        ("en", 5.0),
        ("de", 1.0),
        ("fr", 5.0),
        ("es", 5.0),
    ]
    sizes = [[r.language for r in b] for b in model.batches[1:]]
    assert sizes == [["en", "fr", "es"], ["de"]]


async def test_a_full_queue_refuses_at_once_with_retry_after(
    batcher: Batcher, model: FakeModel
) -> None:
    blocker = await hold_worker(batcher, model)
    tasks = [asyncio.create_task(batcher.submit(chunk(), BatchOptions())) for _ in range(4)]
    await until(lambda: batcher.queued == 4)
    with pytest.raises(QueueFull) as refused:
        await batcher.submit(chunk(), BatchOptions())
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}
    model.release.set()
    await asyncio.gather(blocker, *tasks)
    assert batcher.queued == 0


async def test_wait_for_room_waits_instead_of_refusing(batcher: Batcher, model: FakeModel) -> None:
    blocker = await hold_worker(batcher, model)
    tasks = [asyncio.create_task(batcher.submit(chunk(), BatchOptions())) for _ in range(4)]
    await until(lambda: batcher.queued == 4)
    patient = asyncio.create_task(batcher.submit(chunk(), BatchOptions(), wait_for_room=True))
    await asyncio.sleep(0.05)
    assert not patient.done() and batcher.queued == 4
    model.release.set()
    await asyncio.gather(blocker, *tasks, patient)


async def test_a_cancelled_request_frees_its_place(batcher: Batcher, model: FakeModel) -> None:
    blocker = await hold_worker(batcher, model)
    waiting = asyncio.create_task(batcher.submit(chunk(), BatchOptions()))
    await until(lambda: batcher.queued == 1)
    waiting.cancel()
    await until(lambda: batcher.queued == 0)
    model.release.set()
    await blocker
    assert [len(b) for b in model.batches] == [1]


async def test_a_failing_chunk_fails_alone(batcher: Batcher, model: FakeModel) -> None:
    blocker = await hold_worker(batcher, model)
    good = [asyncio.create_task(batcher.submit(chunk(), BatchOptions())) for _ in range(2)]
    bad = asyncio.create_task(batcher.submit(chunk(initial_prompt="fail"), BatchOptions()))
    await until(lambda: batcher.queued == 3)
    model.release.set()
    await asyncio.gather(blocker, *good)
    with pytest.raises(RuntimeError, match="bad chunk"):
        await bad
    # The batch of three failed, then each chunk ran on its own.
    assert [len(b) for b in model.batches] == [1, 3, 1, 1, 1]


async def test_the_batch_waits_for_more_chunks_at_most_max_wait(model: FakeModel) -> None:
    batcher = Batcher(model.decode, max_batch_size=8, max_wait_seconds=30.0, max_queued=8)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(chunk(), BatchOptions()))
        await until(lambda: batcher.queued == 1)
        second = asyncio.create_task(batcher.submit(chunk(), BatchOptions()))
        await until(lambda: batcher.queued == 2)
        assert not model.batches  # still waiting for the batch to fill
    finally:
        await batcher.stop()
    for task in (first, second):
        with pytest.raises(ModelNotReady):
            await task


async def test_a_full_batch_does_not_wait(model: FakeModel) -> None:
    batcher = Batcher(model.decode, max_batch_size=2, max_wait_seconds=30.0, max_queued=8)
    batcher.start()
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(batcher.submit(chunk(), BatchOptions()) for _ in range(2)))
    finally:
        await batcher.stop()
    assert [len(b) for b in model.batches] == [2]


async def test_submit_without_a_worker_is_not_ready(model: FakeModel) -> None:
    batcher = Batcher(model.decode, max_batch_size=2, max_wait_seconds=0, max_queued=2)
    with pytest.raises(ModelNotReady):
        await batcher.submit(chunk(), BatchOptions())


def test_one_job_keeps_a_second_batch_waiting_by_default() -> None:
    """The transcriber's default sends two batches' worth of one job's chunks at once.

    With only one batch's worth in flight, each chunk's successor arrives after the batch it
    was in has started, so batches split (8, 5, 3, 5, 3, 4 on the long-media recording);
    with two, the next batch fills while one decodes (8, 8, 8, 4).
    """
    from model_server.settings import ModelServerSettings
    from transcriber_service.settings import TranscriberSettings

    max_batch_size = ModelServerSettings.model_fields["max_batch_size"].default
    chunk_concurrency = TranscriberSettings.model_fields["chunk_concurrency"].default
    assert chunk_concurrency == 2 * max_batch_size


async def test_with_two_workers_two_batches_run_at_once() -> None:
    """``MODEL_WORKERS=2``: a second batch is decoded while the first still runs (each
    decode waits for the other at a barrier: one worker would never get past it)."""
    both = threading.Barrier(2, timeout=10)
    sizes: list[int] = []

    def decode(requests: Sequence[ChunkRequest], options: BatchOptions) -> list[Transcript]:
        both.wait()
        sizes.append(len(requests))
        return [Transcript([], "en", 1.0, r.duration) for r in requests]

    batcher = Batcher(decode, max_batch_size=2, max_wait_seconds=0.0, max_queued=8, workers=2)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(chunk(), BatchOptions()) for _ in range(3)))
    finally:
        await batcher.stop()
    assert len(results) == 3 and sorted(sizes) == [1, 2]
    assert not batcher.running


async def test_stopping_fails_waiting_chunks_with_every_worker_busy(model: FakeModel) -> None:
    batcher = Batcher(model.decode, max_batch_size=1, max_wait_seconds=0.0, max_queued=4, workers=2)
    batcher.start()
    model.hold()
    running = [asyncio.create_task(batcher.submit(chunk(), BatchOptions())) for _ in range(2)]
    await until(lambda: batcher.queued == 0)
    waiting = asyncio.create_task(batcher.submit(chunk(), BatchOptions()))
    await until(lambda: batcher.queued == 1)
    stopping = asyncio.create_task(batcher.stop())
    with pytest.raises(ModelNotReady):
        await waiting
    model.release.set()
    await stopping
    for task in running:
        with pytest.raises((ModelNotReady, asyncio.CancelledError)):
            await task
