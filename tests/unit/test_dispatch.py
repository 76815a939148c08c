"""The orchestrator's view of the transcriber fleet: how many jobs, and where."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator_service.dispatch import Fleet, claim_limits, free_slots
from transcription_core.repository.replicas import ReplicaState

T0 = datetime(2026, 11, 29, tzinfo=UTC)


def replica(
    name: str, *, slots: int = 2, running: int = 0, version: int = 0, **kw: object
) -> ReplicaState:
    values: dict[str, object] = {
        "url": f"http://{name}:8080",
        "accepting": True,
        "model_saturated": False,
        "heartbeat_at": T0,
    }
    values.update(kw)
    return ReplicaState(name, slots=slots, running=running, version=version, **values)  # type: ignore[arg-type]


def fleet_of(*rows: ReplicaState) -> Fleet:
    fleet = Fleet()
    fleet.refresh(rows)
    return fleet


def test_a_replica_has_its_free_slots_unless_it_stops_or_the_model_tier_holds_it_back() -> None:
    assert free_slots(replica("a", running=1)) == 1
    assert free_slots(replica("a", running=3)) == 0
    assert free_slots(replica("a", accepting=False)) == 0
    assert free_slots(replica("a", running=1, model_saturated=True)) == 0
    # Nothing running: no chunk can grow its window back, the flag says nothing now.
    assert free_slots(replica("a", running=0, model_saturated=True)) == 2


def test_the_claim_gets_the_fleets_room_within_the_budget() -> None:
    fleet = fleet_of(replica("a"), replica("b", running=1), replica("c", running=2))
    assert (fleet.capacity, fleet.free, fleet.slots) == (6, 3, 6)
    assert claim_limits(fleet, budget=100, batch_size=100) == (6, 3)
    assert claim_limits(fleet, budget=4, batch_size=100) == (4, 3)
    assert claim_limits(fleet, budget=100, batch_size=2) == (6, 2)
    assert claim_limits(Fleet(), budget=100, batch_size=100) == (0, 0)


def test_a_saturated_replica_keeps_what_it_runs_and_gets_nothing_more() -> None:
    fleet = fleet_of(replica("a", running=1, model_saturated=True), replica("b"))
    assert (fleet.capacity, fleet.free, fleet.saturated) == (3, 2, 1)
    assert [r.id for r in fleet.plan(3)] == ["b", "b"]


def test_a_stopping_replica_gets_nothing_and_its_jobs_still_count() -> None:
    fleet = fleet_of(replica("a", running=2, accepting=False), replica("b"))
    assert (fleet.capacity, fleet.free, fleet.slots) == (4, 2, 2)


def test_triggers_spread_over_the_replicas_with_the_most_room() -> None:
    fleet = fleet_of(replica("a"), replica("b"), replica("c", running=1))
    plan = fleet.plan(7)
    assert len(plan) == 5  # all the room there is
    assert Counter(r.id for r in plan) == {"a": 2, "b": 2, "c": 1}
    assert [r.id for r in plan[:2]] == ["a", "b"]  # one each first


def test_the_freshest_of_a_row_and_an_answer_wins() -> None:
    fleet = fleet_of(replica("a", version=4))
    fleet.answered(replace(replica("a", running=1, version=5), url="", heartbeat_at=None))
    assert fleet.replicas["a"].running == 1
    assert fleet.replicas["a"].url == "http://a:8080"  # the answer carries no URL
    fleet.refresh([replica("a", version=4)])  # a row written before the trigger
    assert fleet.replicas["a"].running == 1
    fleet.refresh([replica("a", running=2, version=6)])
    assert fleet.replicas["a"].running == 2
    fleet.answered(replica("a", running=0, version=5))  # an older answer
    assert fleet.replicas["a"].running == 2
    fleet.answered(replica("z", version=9))  # a replica without a row: not taken in
    assert set(fleet.replicas) == {"a"}


def test_a_replica_whose_row_is_gone_is_gone() -> None:
    fleet = fleet_of(replica("a"), replica("b"))
    fleet.refresh([replica("b")])
    assert set(fleet.replicas) == {"b"}


def test_an_unreachable_replica_is_left_out_until_it_reports_again() -> None:
    fleet = fleet_of(replica("a"), replica("b"))
    fleet.unreachable("a")
    assert set(fleet.replicas) == {"b"}
    fleet.refresh([replica("a"), replica("b")])  # the same heartbeat: still out
    assert set(fleet.replicas) == {"b"}
    later = T0 + timedelta(seconds=40)
    fleet.refresh([replica("a", heartbeat_at=later), replica("b")])
    assert set(fleet.replicas) == {"a", "b"}


def test_an_answer_from_another_replica_at_the_address_retires_the_old_one() -> None:
    """A replica killed and restarted on the same port: its old row still looks free
    until it ages out, but the answer comes from the new process."""
    fleet = fleet_of(replica("old"), replica("new"))
    fleet.answered(replica("new", running=1, version=1), sent_to="old")
    assert set(fleet.replicas) == {"new"} and fleet.replicas["new"].running == 1
    fleet.answered(replica("new", running=2, version=2), sent_to="new")
    assert fleet.replicas["new"].running == 2
