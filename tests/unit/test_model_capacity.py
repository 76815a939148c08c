"""The AIMD window on chunks in flight: the pure rule, then the gate built on it."""

from __future__ import annotations

import asyncio

import pytest

from transcriber_service import metrics
from transcriber_service.model_capacity import Aimd, ModelCapacity

# -- the rule ---------------------------------------------------------------------------------


def test_it_starts_at_its_maximum() -> None:
    aimd = Aimd(16)
    assert aimd.limit == 16


def test_a_full_queue_halves_the_window_down_to_one() -> None:
    aimd = Aimd(16)
    limits = []
    for _ in range(6):
        aimd.queue_full(aimd.round)
        limits.append(aimd.limit)
    assert limits == [8, 4, 2, 1, 1, 1]


def test_a_burst_of_full_answers_from_one_round_halves_once() -> None:
    aimd = Aimd(16)
    sent_in = aimd.round  # 16 chunks sent together, all answered "queue full"
    halved = [aimd.queue_full(sent_in) for _ in range(16)]
    assert halved == [True] + [False] * 15
    assert aimd.limit == 8
    aimd.queue_full(aimd.round)  # a chunk sent after the halving: news
    assert aimd.limit == 4


def test_it_halves_what_was_in_flight_when_that_is_less_than_the_window() -> None:
    aimd = Aimd(128)
    aimd.queue_full(aimd.round, in_flight=24)
    assert aimd.limit == 12
    aimd.queue_full(aimd.round, in_flight=40)  # never above half the window
    assert aimd.limit == 6
    aimd.queue_full(aimd.round, in_flight=1)
    assert aimd.limit == 1


def test_successes_add_one_per_window_of_successes_up_to_the_maximum() -> None:
    aimd = Aimd(8)
    for _ in range(3):
        aimd.queue_full(aimd.round)
    assert aimd.limit == 1
    grown = []
    for _ in range(1 + 2 + 3 + 4 + 5 + 6 + 7 + 10):
        aimd.success()
        grown.append(aimd.limit)
    # One success at a window of 1 makes it 2, two at 2 make it 3, ...
    assert grown[:6] == [2, 2, 3, 3, 3, 4]
    assert grown[-1] == 8 and max(grown) == 8


def test_the_maximum_must_allow_one() -> None:
    with pytest.raises(ValueError):
        Aimd(0)


# -- the gate ---------------------------------------------------------------------------------


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_gate_lets_the_window_through_and_queues_the_rest() -> None:
    gate = ModelCapacity(2)
    first, second = await gate.acquire(), await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await settle()
    assert not third.done() and gate.in_flight == 2
    gate.success(first)
    slot = await third
    assert gate.in_flight == 2
    gate.success(second)
    gate.success(slot)
    assert gate.in_flight == 0


async def test_a_full_queue_narrows_the_gate_and_successes_widen_it_again() -> None:
    gate = ModelCapacity(4)
    slots = [await gate.acquire() for _ in range(4)]
    for slot in slots:
        gate.queue_full(slot)  # one round: halved once
    assert gate.aimd.limit == 2 and gate.saturated
    assert gate.in_flight == 0
    assert metrics.MODEL_SATURATED._value.get() == 1
    assert metrics.MODEL_WINDOW._value.get() == 2
    held = [await gate.acquire() for _ in range(2)]
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()
    gate.success(held[0])  # window 2.5: still 2 in flight at most
    await settle()
    assert blocked.done()  # held[0]'s place
    gate.success(held[1])
    gate.success(blocked.result())
    assert gate.aimd.limit == 3
    for _ in range(6):
        gate.success(await gate.acquire())
    assert gate.aimd.limit == 4 and not gate.saturated
    assert metrics.MODEL_SATURATED._value.get() == 0


async def test_the_gate_halves_the_chunks_it_had_out() -> None:
    gate = ModelCapacity(64)
    slots = [await gate.acquire() for _ in range(6)]
    gate.queue_full(slots[0])
    assert gate.aimd.limit == 3
    for slot in slots[1:]:
        gate.release(slot)


async def test_a_chunk_that_met_a_full_queue_goes_before_chunks_not_yet_sent() -> None:
    gate = ModelCapacity(1)
    held = await gate.acquire()
    order: list[str] = []

    async def take(name: str, first: bool) -> None:
        slot = await gate.acquire(first=first)
        order.append(name)
        gate.release(slot)

    new = asyncio.create_task(take("new", False))
    await settle()
    retried = asyncio.create_task(take("retried", True))
    await settle()
    gate.release(held)
    await asyncio.gather(new, retried)
    assert order == ["retried", "new"]


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    gate = ModelCapacity(1)
    held = await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release(held)
    assert gate.in_flight == 0
    slot = await gate.acquire()  # at once: nobody is queued any more
    gate.release(slot)
    gate.release(slot)  # twice is once
    assert gate.in_flight == 0


async def test_a_waiter_cancelled_as_it_is_woken_passes_its_place_on() -> None:
    gate = ModelCapacity(1)
    held = await gate.acquire()
    woken = asyncio.create_task(gate.acquire())
    after = asyncio.create_task(gate.acquire())
    await settle()
    gate.release(held)  # wakes ``woken``, which has not run yet ...
    woken.cancel()  # ... and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await woken
    slot = await after
    assert gate.in_flight == 1
    gate.release(slot)
    assert gate.in_flight == 0
