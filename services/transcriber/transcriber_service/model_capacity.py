"""How many chunks this transcriber sends to the model tier at once: additive increase,
multiplicative decrease (AIMD) on a window, as TCP does with its congestion window.

* :class:`Aimd` is the pure rule. A "queue full" answer halves the window (never below 1),
  or rather halves what was in flight when that is less (RFC 5681 takes half the flight
  size, not of the window: a window of 128 with 24 chunks out becomes 12, not 64), once per
  round: answers to chunks sent before the last halving say nothing new, so a burst of
  them halves it once, not down to 1. Each success adds ``1 / window``, so the
  window grows by one per window's worth of successes (one per round trip): a saturated
  model tier sees the window probe upwards slowly instead of doubling every round trip.
* :class:`ModelCapacity` is the gate built on it: a chunk takes a :class:`Slot` before
  each request and gives it back with the outcome. Waiters are served first come, first
  served, except that a chunk that met a full queue goes before chunks not yet sent, so
  it is not starved by them.

One window per transcriber process, shared by all its jobs: a full queue is a fact about
the model tier, which every job of the process shares; a window per job would let each
new job start at full speed and multiply the process's requests by its jobs. Its maximum
is ``CHUNK_CONCURRENCY x WORKER_MAX_JOBS``, what the process may send when nothing is
full; each job still sends at most ``CHUNK_CONCURRENCY`` (``pipeline.py``).

:attr:`ModelCapacity.saturated` (window below its maximum) is the process's answer to
"is the model tier full?": the ``transcription_model_saturated`` gauge, and what
``GET /v1/capacity`` reports for the orchestrator.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from transcriber_service import metrics


class Aimd:
    """The window rule, without clocks or I/O."""

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.window = float(maximum)
        #: Bumped at every decrease; a request remembers the round it was sent in.
        self.round = 0

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return max(1, int(self.window))

    def success(self) -> None:
        self.window = min(float(self.maximum), self.window + 1.0 / self.limit)

    def queue_full(self, sent_in_round: int, in_flight: int | None = None) -> bool:
        """Halve the window (or ``in_flight`` if fewer), unless the request was sent
        before the last halving."""
        if sent_in_round != self.round:
            return False
        flight = self.limit if in_flight is None else min(self.limit, in_flight)
        self.window = max(1.0, float(flight // 2))
        self.round += 1
        return True


@dataclass
class Slot:
    """One request's place in the window."""

    round: int
    released: bool = False


class ModelCapacity:
    """The window as an async gate; one per transcriber process."""

    def __init__(self, maximum: int) -> None:
        self.aimd = Aimd(maximum)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._report()

    @property
    def saturated(self) -> bool:
        """Whether the model tier said "queue full" and the window has not grown back."""
        return self.aimd.limit < self.aimd.maximum

    async def acquire(self, *, first: bool = False) -> Slot:
        """Wait for room in the window; ``first`` goes ahead of chunks not yet sent."""
        if not self._waiters and self.in_flight < self.aimd.limit:
            self.in_flight += 1
            self._report()
            return Slot(self.aimd.round)
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter  # _wake() counted us in before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # woken and cancelled at once: pass the room on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        return Slot(self.aimd.round)

    def success(self, slot: Slot) -> None:
        self.aimd.success()
        self.release(slot)

    def queue_full(self, slot: Slot) -> None:
        self.aimd.queue_full(slot.round, self.in_flight)
        self.release(slot)

    def release(self, slot: Slot) -> None:
        """Give the slot back without a verdict (a failure, a cancellation)."""
        if not slot.released:
            slot.released = True
            self._give_back()

    def _give_back(self) -> None:
        self.in_flight -= 1
        self._wake()
        self._report()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.aimd.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _report(self) -> None:
        metrics.MODEL_WINDOW.set(self.aimd.limit)
        metrics.MODEL_IN_FLIGHT.set(self.in_flight)
        metrics.MODEL_SATURATED.set(1 if self.saturated else 0)
