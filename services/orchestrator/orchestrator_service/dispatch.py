"""How many jobs to trigger, and where: the orchestrator's view of the transcriber fleet.

Pure: no I/O, no clock. The orchestrator feeds it the replicas' rows
(``transcription_core.replicas``) and its triggers' answers; the capacity simulation
(``bench/capacity_sim.py``) runs the same code.

* **A replica's room** (:func:`free_slots`): its slots less what it runs; none while it
  shuts down (it finishes or hands back what it runs and takes nothing new), and none
  while it reports the model tier saturated with jobs running (a new job would add
  chunks to a full tier; with nothing running the flag says nothing, since no chunk can
  have grown the window back).
* **The fleet's capacity** is what its replicas run plus their room. The claim is given
  ``min(budget, capacity)`` as its in-flight limit (the budget is
  ``MAX_CONCURRENT_TRANSCRIPTION_JOBS``) and the fleet's room as its batch limit
  (:func:`claim_limits`): jobs of a replica that died still count as in flight until
  their lease expires, so nothing is claimed for their slots before that.
* **Freshest wins**: a row and a trigger's answer both carry the replica's ``version``,
  bumped at every job it starts or ends; the higher one is kept, so a row written
  before a trigger was taken does not give its slot out twice.
* **Where** (:meth:`Fleet.plan`): each job to the replica with the most room (then the
  fewest running, then by id), one at a time, so work spreads over the replicas.
* **Unreachable**: a replica whose trigger failed to connect, or was answered by another
  replica (a restart on the same address), is left out until it reports again (a newer
  heartbeat): a killed replica gets no trigger while its row ages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from transcription_core.repository.replicas import ReplicaState


def free_slots(replica: ReplicaState) -> int:
    if not replica.accepting or (replica.model_saturated and replica.running > 0):
        return 0
    return max(replica.slots - replica.running, 0)


def claim_limits(fleet: Fleet, budget: int, batch_size: int) -> tuple[int, int]:
    """``(max_in_flight, batch_limit)`` for ``repository.claim_due_jobs``."""
    return min(budget, fleet.capacity), min(batch_size, fleet.free)


class Fleet:
    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaState] = {}
        #: Replicas that could not be reached, with the heartbeat they had then.
        self._unreachable: dict[str, datetime | None] = {}

    def refresh(self, rows: Iterable[ReplicaState]) -> None:
        """The live replicas' rows: the fleet is these from now on (a replica whose row
        is gone or too old is gone), each kept as the row or as a newer answer."""
        rows = list(rows)
        ids = {row.id for row in rows}
        self._unreachable = {k: v for k, v in self._unreachable.items() if k in ids}
        fleet: dict[str, ReplicaState] = {}
        for row in rows:
            if row.id in self._unreachable:
                if row.heartbeat_at == self._unreachable[row.id]:
                    continue  # not heard from since its trigger failed
                del self._unreachable[row.id]
            known = self.replicas.get(row.id)
            fleet[row.id] = row if known is None or row.version >= known.version else known
        self.replicas = fleet

    def answered(self, state: ReplicaState, sent_to: str | None = None) -> None:
        """A trigger's answer: the replica as it was just after it took or refused it.
        Answered by another replica than ``sent_to`` (a restart on the same address),
        that one is gone: it is left out as if unreachable."""
        if sent_to is not None and sent_to != state.id:
            self.unreachable(sent_to)
        known = self.replicas.get(state.id)
        if known is not None and state.version >= known.version:
            self.replicas[state.id] = replace(state, url=known.url, heartbeat_at=known.heartbeat_at)

    def unreachable(self, replica_id: str) -> None:
        known = self.replicas.pop(replica_id, None)
        if known is not None:
            self._unreachable[replica_id] = known.heartbeat_at

    @property
    def free(self) -> int:
        return sum(free_slots(r) for r in self.replicas.values())

    @property
    def capacity(self) -> int:
        return sum(r.running + free_slots(r) for r in self.replicas.values())

    @property
    def slots(self) -> int:
        """The slots of the replicas that take work (not shutting down)."""
        return sum(r.slots for r in self.replicas.values() if r.accepting)

    @property
    def saturated(self) -> int:
        """Replicas held back by the model tier (saturated, with jobs running)."""
        return sum(1 for r in self.replicas.values() if r.model_saturated and r.running > 0)

    def plan(self, count: int) -> list[ReplicaState]:
        """Where the next ``count`` triggers go (fewer if the fleet has less room)."""
        room = {r.id: free_slots(r) for r in self.replicas.values()}
        running = {r.id: r.running for r in self.replicas.values()}
        targets = []
        for _ in range(count):
            best = min(
                (rid for rid, free in room.items() if free > 0),
                key=lambda rid: (-room[rid], running[rid], rid),
                default=None,
            )
            if best is None:
                break
            room[best] -= 1
            running[best] += 1
            targets.append(self.replicas[best])
        return targets
