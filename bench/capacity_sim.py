"""A SIMULATION, not a measurement: a day of the main user's traffic through the service's
dispatch and its autoscalers, in one process, with no cluster and no service running.

    .venv/bin/python bench/capacity_sim.py                # the day, both ways (~3 min)
    .venv/bin/python bench/capacity_sim.py --hours 2      # a shorter day, for a look

What is real and what is modelled:

* **Dispatch is the orchestrator's own code**: every round builds the transcriber
  replicas' rows as ``transcription_core.replicas.ReplicaState`` and calls
  ``orchestrator_service.dispatch`` (``Fleet.refresh``, ``claim_limits``,
  ``Fleet.plan``), as ``orchestrator_service.service`` does. Modelled around it: the
  claim (first come, first served: one tenant, so the fair ranking does not matter) takes
  ``min(max_in_flight - in flight, batch_limit)`` jobs, the room
  ``repository.claim_due_jobs`` computes; a round runs every second.
* **The transcribers' autoscaler is KEDA + the HPA** as deployed
  (``deploy/knative/transcriber.yaml``): KEDA polls the scaler's number every
  ``pollingInterval`` (10 s): jobs in flight plus jobs due (none while a transcriber with
  jobs reports the model tier saturated), capped by the budget; the HPA syncs every 15 s,
  wants ``ceil(number / targetQueryValue)`` (1.4: 70 % of WORKER_MAX_JOBS) unless within
  its 10 % tolerance, scales up by
  at most max(100 %, 20 pods) per 15 s, down by the highest recommendation of the last
  300 s (stabilisation) and at most 20 % per 60 s, within min and max. A new pod takes
  ``--pod-start`` (20 s) to be ready. A pod removed stops taking work at once, finishes its
  jobs (or hands back what still runs after SHUTDOWN_GRACE_SECONDS, 480 s) and counts in
  the replica-hours until then. Which pod goes: not ready first, then the newest (the
  ReplicaSet's order).
* **The model servers' autoscaler is Knative's KPA** as deployed
  (``model-server.yaml``): every 2 s, the average concurrency (chunks in flight and
  queued at the tier) over the 60 s stable window and the 6 s panic window, divided by
  the target (containerConcurrency x 80 %; the simulated CPU replica takes one chunk at
  a time: 1 x 80 %, ``--kpa-target``); panic when the panic window wants at least
  twice the ready pods, no scale-down while panicking (it ends 60 s after the last
  trigger); at most x1000 up and /2 down per step, scale-down-delay 10 min (the highest
  wanted over the last 10 min), within min and max. A new replica takes
  ``--model-start`` (120 s: a GPU node and the model).
* **Costs are the project's measurements** (``bench/README.md``, 2 CPU cores, tiny.en,
  int8): a job takes ``0.2 s + 1.4 ms per media second`` of transcriber time before its
  chunks (download, decode, VAD: ``long-media``, 0.9 s of the 14.4 s of a 639 s
  recording were not the model), then its chunks (``ceil(0.93 x media / 21.2 s)``: 594 s
  of the 639 s sent, mean chunk 21.2 s), at most CHUNK_CONCURRENCY (8, ``config.env``)
  in flight, each costing the model tier ``0.48 s`` of one replica (13.5 s of model
  compute for 28 chunks), then 0.05 s to deliver. So one simulated model replica is what
  the 2-core CPU running tiny.en did, not a production GPU running large-v3 (nothing here
  measured one): with those costs the model tier needs hundreds of replicas, hence its
  max of ``--model-max`` (400) here against 20 GPU replicas in the manifest. The tier is
  one first-come first-served queue served at ``min(chunks there, ready replicas) / 0.48``
  chunks a second (a replica decodes at that rate whenever it has a chunk, its batch
  sharing it);
  it is saturated (the model servers answer 503 queue full, the transcribers' AIMD halves
  their windows and they report it) while more than ``--saturated-per-replica`` (88:
  containerConcurrency 8 plus the queue-proxy's 10 x 8, the manifest when the recorded
  runs were made; its 16 now gives 176) chunks wait per ready replica.
* **Traffic**: Poisson arrivals; 275 +/- 25 jobs a minute at night (20:00 to 07:00),
  550 +/- 50 in business hours (08:00 to 20:00, a sine over the day), linear in between,
  and 3 x that for ten minutes from 14:00. Media lengths: lognormal, median 4 min,
  sigma 1.0 (mean 6.6 min), from 5 s to 4 h (MAX_MEDIA_SECONDS).

Two days are run with the same arrivals: **autoscaled** (KEDA 2 to 300 transcribers,
budget 600) and **fixed**, today's manifests before this change (10 transcribers always,
min-scale = max-scale in effect since Knative never saw the work, limit 20). The model
tier is KPA-scaled in both, within the same bounds. Results: ``bench/results/
capacity-sim-<date>.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

from orchestrator_service.dispatch import Fleet, claim_limits
from transcription_core.repository.replicas import ReplicaState

DAY = 86_400


@dataclass(frozen=True)
class Params:
    hours: float = 24.0
    seed: int = 12
    #: Simulated before midnight and not counted: the services start from a warm night.
    warmup_s: float = 2 * 3600.0
    # --- traffic
    night_per_min: float = 275.0
    day_per_min: float = 550.0
    swing: float = 0.0909  # +/- 9 %: 500-600 by day, 250-300 by night
    burst_at_s: float = 14 * 3600.0
    burst_s: float = 600.0
    burst_factor: float = 3.0
    media_median_s: float = 240.0
    media_sigma: float = 1.0
    media_min_s: float = 5.0
    media_max_s: float = 14_400.0
    # --- measured costs (bench/README.md)
    prep_fixed_s: float = 0.2
    prep_per_media_s: float = 0.0014
    sent_fraction: float = 594 / 639
    chunk_audio_s: float = 21.2
    chunk_model_s: float = 13.5 / 28
    deliver_s: float = 0.05
    chunk_concurrency: int = 8
    # --- transcribers (KEDA + HPA)
    slots: int = 2
    #: The ScaledObject's targetQueryValue: jobs per replica KEDA aims at (70 % of its
    #: slots). With 1.6 and 1.5 the queue reached 11 and 10 once outside the burst.
    keda_target: float = 1.4
    budget: int = 600
    keda_min: int = 2
    keda_max: int = 300
    keda_poll_s: float = 10.0
    hpa_sync_s: float = 15.0
    hpa_tolerance: float = 0.1
    up_percent: float = 100.0
    up_pods: int = 20
    up_period_s: float = 15.0
    down_window_s: float = 300.0
    down_percent: float = 20.0
    down_period_s: float = 60.0
    pod_start_s: float = 20.0
    shutdown_grace_s: float = 480.0
    lease_s: float = 120.0
    # --- model servers (Knative KPA)
    model_min: int = 1
    model_max: int = 400
    model_start_s: float = 120.0
    #: Knative's target per replica: containerConcurrency x target-utilization. The
    #: manifest's 16 x 80 % is for a GPU replica that decodes four batches of 4 at once
    #: (bench/README.md, gpu); the measured CPU replica gains nothing from batching (a
    #: batch of 5.6 took 5.6 chunks' time), so it is busy with one chunk: 1 x 80 %.
    kpa_target: float = 1 * 0.8
    kpa_tick_s: float = 2.0
    kpa_stable_s: float = 60.0
    kpa_panic_s: float = 6.0
    kpa_panic_threshold: float = 2.0
    kpa_max_up: float = 1000.0
    kpa_max_down: float = 2.0
    kpa_scale_down_delay_s: float = 600.0
    saturated_per_replica: float = 88.0
    # --- today's fixed transcribers
    fixed_replicas: int = 10
    fixed_limit: int = 20


# --- traffic -----------------------------------------------------------------------------


def rate_per_s(p: Params, t: float) -> float:
    """Jobs a second at ``t`` seconds after midnight."""
    hour = (t / 3600.0) % 24
    day = p.day_per_min * (1 + p.swing * math.sin(2 * math.pi * (hour - 8) / 12))
    night = p.night_per_min * (1 + p.swing * math.sin(2 * math.pi * hour / 24))
    if 8 <= hour < 20:
        per_min = day
    elif 7 <= hour < 8:
        per_min = night + (day - night) * (hour - 7)
    else:
        per_min = night
    if p.burst_at_s <= t % DAY < p.burst_at_s + p.burst_s:
        per_min *= p.burst_factor
    return per_min / 60.0


@dataclass
class Arrivals:
    times: np.ndarray
    media_s: np.ndarray


def arrivals(p: Params) -> Arrivals:
    """From ``-warmup_s`` (the end of the night before) to ``hours``."""
    rng = np.random.default_rng(p.seed)
    seconds = np.arange(-p.warmup_s, p.hours * 3600, dtype=float)
    counts = rng.poisson([rate_per_s(p, t % DAY) for t in seconds])
    times = np.repeat(seconds, counts)
    times += rng.random(times.size)
    media = rng.lognormal(math.log(p.media_median_s), p.media_sigma, times.size)
    return Arrivals(times, np.clip(media, p.media_min_s, p.media_max_s))


# --- the simulated parts -------------------------------------------------------------------


@dataclass
class Job:
    id: int
    arrival: float
    media_s: float
    chunks: int
    dispatched: float = -1.0
    pod: Pod | None = None
    to_send: int = 0
    in_flight: int = 0
    done_chunks: int = 0


@dataclass
class Pod:
    id: str
    created: float
    ready_at: float
    accepting: bool = True
    stop_at: float | None = None  # when it was told to stop
    running: set[int] = field(default_factory=set)
    version: int = 0

    def ready(self, now: float) -> bool:
        return now >= self.ready_at


class ModelTier:
    """Replicas (KPA-scaled) behind one first-come first-served queue of chunks."""

    def __init__(self, p: Params, replicas: int) -> None:
        self.p = p
        self.pods: list[float] = [0.0] * replicas  # ready times
        self.queue: deque[list[int]] = deque()  # [job id, chunks]
        self.waiting = 0  # chunks in the queue or being decoded
        self.credit = 0.0
        self.samples: deque[tuple[float, int]] = deque()
        self.panic_since: float | None = None
        self.wanted: deque[tuple[float, int]] = deque()
        self.last_desired = replicas

    def ready(self, now: float) -> int:
        return sum(1 for at in self.pods if at <= now)

    def saturated(self, now: float) -> bool:
        return self.waiting > self.p.saturated_per_replica * max(self.ready(now), 1)

    def send(self, job_id: int, chunks: int) -> None:
        if chunks:
            self.queue.append([job_id, chunks])
            self.waiting += chunks

    def serve(self, now: float, dt: float) -> list[tuple[int, int]]:
        """Chunks decoded during ``dt``: [(job id, chunks)]."""
        # A replica decodes at 1 / chunk_model_s chunks a second whenever it has any (its
        # batch shares that): the tier, at min(chunks there, replicas ready) times that.
        self.credit += min(self.waiting, self.ready(now)) * dt / self.p.chunk_model_s
        done: list[tuple[int, int]] = []
        while self.queue and self.credit >= 1:
            head = self.queue[0]
            take = min(head[1], int(self.credit))
            head[1] -= take
            self.credit -= take
            self.waiting -= take
            done.append((head[0], take))
            if head[1] == 0:
                self.queue.popleft()
        if not self.queue:
            self.credit = min(self.credit, 1.0)
        return done

    def autoscale(self, now: float) -> None:
        """One KPA tick."""
        p = self.p
        self.samples.append((now, self.waiting))
        while self.samples and self.samples[0][0] < now - p.kpa_stable_s:
            self.samples.popleft()
        stable = sum(c for _, c in self.samples) / len(self.samples)
        recent = [c for t, c in self.samples if t >= now - p.kpa_panic_s]
        panic = sum(recent) / len(recent)
        ready = max(self.ready(now), 1)
        want_stable = math.ceil(stable / p.kpa_target)
        want_panic = math.ceil(panic / p.kpa_target)
        up_limit = math.ceil(p.kpa_max_up * ready)
        down_limit = math.floor(ready / p.kpa_max_down)
        want_stable = max(min(want_stable, up_limit), down_limit)
        want_panic = max(min(want_panic, up_limit), down_limit)
        if want_panic / ready >= p.kpa_panic_threshold:
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= p.kpa_stable_s:
            self.panic_since = None
        if self.panic_since is not None:
            desired = max(want_panic, self.last_desired)
        else:
            desired = want_stable
        self.last_desired = desired
        self.wanted.append((now, desired))
        while self.wanted and self.wanted[0][0] < now - p.kpa_scale_down_delay_s:
            self.wanted.popleft()
        desired = max(w for _, w in self.wanted)
        desired = min(max(desired, p.model_min), p.model_max)
        if desired > len(self.pods):
            self.pods += [now + p.model_start_s] * (desired - len(self.pods))
        elif desired < len(self.pods):
            self.pods.sort()  # not yet ready ones go first
            del self.pods[desired:]


class Transcribers:
    """The pods, KEDA's polling and the HPA, or a fixed count."""

    def __init__(self, p: Params, replicas: int, autoscaled: bool) -> None:
        self.p = p
        self.autoscaled = autoscaled
        self.pods: dict[str, Pod] = {}
        self.stopping: dict[str, Pod] = {}
        self.serial = 0
        self.metric = 0
        self.history: deque[tuple[float, int]] = deque()  # (time, replicas), for policies
        self.recommendations: deque[tuple[float, int]] = deque()
        for _ in range(replicas):
            self._add(0.0, ready_at=0.0)

    def _add(self, now: float, ready_at: float | None = None) -> None:
        self.serial += 1
        pid = f"transcriber-{self.serial}"
        start = now + self.p.pod_start_s if ready_at is None else ready_at
        self.pods[pid] = Pod(pid, now, start)

    def count(self) -> int:
        return len(self.pods)

    def rows(self, now: float, saturated: bool) -> list[ReplicaState]:
        """What the replicas' rows say (a stopping one says it takes nothing)."""
        return [
            ReplicaState(
                pod.id,
                f"http://{pod.id}:8080",
                self.p.slots,
                len(pod.running),
                pod.accepting,
                saturated,
                pod.version,
            )
            for pod in self.pods.values()
            if pod.ready(now)
        ] + [
            ReplicaState(pod.id, "", self.p.slots, len(pod.running), False, saturated, pod.version)
            for pod in self.stopping.values()
        ]

    def keda_poll(self, in_flight: int, due: int, saturated: bool, budget: int) -> None:
        self.metric = min(in_flight + (0 if saturated else min(due, budget)), budget)

    def hpa_sync(self, now: float) -> None:
        p = self.p
        current = self.count()
        ratio = self.metric / (p.keda_target * current) if current else math.inf
        desired = (
            current if abs(ratio - 1) <= p.hpa_tolerance else math.ceil(self.metric / p.keda_target)
        )
        self.recommendations.append((now, desired))
        while self.recommendations and self.recommendations[0][0] < now - p.down_window_s:
            self.recommendations.popleft()
        self.history.append((now, current))
        while self.history and self.history[0][0] < now - max(p.up_period_s, p.down_period_s):
            self.history.popleft()
        if desired > current:
            base = min(r for t, r in self.history if t >= now - p.up_period_s)
            limit = max(math.ceil(base * (1 + p.up_percent / 100)), base + p.up_pods)
            desired = min(desired, limit)
        else:
            desired = max(r for _, r in self.recommendations)  # stabilisation window
            if desired < current:
                base = max(r for t, r in self.history if t >= now - p.down_period_s)
                desired = max(desired, math.ceil(base * (1 - p.down_percent / 100)))
        desired = min(max(desired, p.keda_min), p.keda_max)
        if desired > current:
            for _ in range(desired - current):
                self._add(now)
        elif desired < current:
            # The ReplicaSet's order: not ready first, then the newest.
            order = sorted(
                self.pods.values(), key=lambda pod: (pod.ready(now), pod.created), reverse=False
            )
            not_ready = [pod for pod in order if not pod.ready(now)]
            ready = sorted((pod for pod in order if pod.ready(now)), key=lambda pod: -pod.created)
            for pod in (not_ready + ready)[: current - desired]:
                del self.pods[pod.id]
                pod.accepting = False
                pod.stop_at = now
                pod.version += 1
                if pod.running:
                    self.stopping[pod.id] = pod

    def alive(self, now: float) -> tuple[int, int, int]:
        """(ready, starting, stopping) pods: all count in replica-hours."""
        ready = sum(1 for pod in self.pods.values() if pod.ready(now))
        return ready, len(self.pods) - ready, len(self.stopping)


@dataclass
class Result:
    name: str
    minutes: list[dict[str, float]]
    waits: np.ndarray
    latency: np.ndarray
    handed_back: int
    transcriber_pod_s: float
    model_pod_s: float
    unfinished: int
    rounds: int


def simulate(p: Params, arr: Arrivals, autoscaled: bool) -> Result:
    budget = p.budget if autoscaled else p.fixed_limit
    tx = Transcribers(p, p.keda_min if autoscaled else p.fixed_replicas, autoscaled)
    model = ModelTier(p, p.model_min)
    fleet = Fleet()
    jobs: dict[int, Job] = {}
    queue: deque[int] = deque()
    prep: list[tuple[float, int]] = []  # (when its chunks start, job id)
    delivering: list[tuple[float, int]] = []
    waits = np.full(arr.times.size, np.nan)
    latency = np.full(arr.times.size, np.nan)
    in_flight = 0
    next_arrival = 0
    handed_back = 0
    tx_pod_s = model_pod_s = 0.0
    rounds = 0
    minutes: list[dict[str, float]] = []
    acc: dict[str, float] = {}
    end = p.hours * 3600
    dt = 1.0
    now = -p.warmup_s
    drain_until = end + 4 * 3600  # room to drain a backlog after the last arrival

    def finish(job: Job, at: float) -> None:
        nonlocal in_flight
        pod = job.pod
        assert pod is not None
        pod.running.discard(job.id)
        pod.version += 1
        in_flight -= 1
        latency[job.id] = at - job.arrival
        del jobs[job.id]
        if not pod.running and pod.id in tx.stopping:
            del tx.stopping[pod.id]

    while now < end or (jobs and now < drain_until):
        # Arrivals of the second before: a round runs every second (the real orchestrator
        # is woken by each enqueue; here a wait is rounded up to the second).
        while next_arrival < arr.times.size and arr.times[next_arrival] < now:
            media = float(arr.media_s[next_arrival])
            chunks = max(1, math.ceil(media * p.sent_fraction / p.chunk_audio_s))
            jobs[next_arrival] = Job(next_arrival, float(arr.times[next_arrival]), media, chunks)
            queue.append(next_arrival)
            next_arrival += 1
        saturated = model.saturated(now)
        # Jobs delivered by now free their slots before the round (the real orchestrator
        # is woken by the slot's NOTIFY).
        while delivering and delivering[0][0] <= now:
            at, jid = heapq.heappop(delivering)
            finish(jobs[jid], at)

        # The orchestrator's rounds: its own dispatch code on the replicas' rows.
        if queue:
            fleet.refresh(tx.rows(now, saturated))
            while queue:
                rounds += 1
                max_in_flight, batch = claim_limits(fleet, budget, 100)
                room = min(max_in_flight - in_flight, batch, len(queue))
                if room <= 0:
                    break
                targets = fleet.plan(room)
                for target in targets:
                    job = jobs[queue.popleft()]
                    pod = tx.pods[target.id]
                    job.pod, job.dispatched = pod, now
                    waits[job.id] = now - job.arrival
                    pod.running.add(job.id)
                    pod.version += 1
                    in_flight += 1
                    start = now + p.prep_fixed_s + p.prep_per_media_s * job.media_s
                    heapq.heappush(prep, (start, job.id))
                fleet.refresh(tx.rows(now, saturated))  # as the triggers' answers do

        # Transcribers: chunks start after the job's preparation.
        while prep and prep[0][0] < now + dt:
            _, jid = heapq.heappop(prep)
            job = jobs[jid]
            job.to_send = job.chunks
            send = min(p.chunk_concurrency, job.to_send)
            job.to_send -= send
            job.in_flight = send
            model.send(jid, send)
        for jid, count in model.serve(now, dt):
            job = jobs.get(jid)
            if job is None:
                continue
            job.in_flight -= count
            job.done_chunks += count
            send = min(p.chunk_concurrency - job.in_flight, job.to_send)
            job.to_send -= send
            job.in_flight += send
            model.send(jid, send)
            if job.done_chunks == job.chunks:
                heapq.heappush(delivering, (now + dt + p.deliver_s, jid))

        # Stopping pods past their grace hand back what still runs (attempt not counted).
        for pod in list(tx.stopping.values()):
            assert pod.stop_at is not None
            if now - pod.stop_at >= p.shutdown_grace_s:
                for jid in list(pod.running):
                    job = jobs[jid]
                    model.queue = deque(e for e in model.queue if e[0] != jid)
                    model.waiting = sum(e[1] for e in model.queue)
                    prep[:] = [e for e in prep if e[1] != jid]
                    heapq.heapify(prep)
                    job.pod, job.to_send, job.in_flight, job.done_chunks = None, 0, 0, 0
                    pod.running.discard(jid)
                    in_flight -= 1
                    queue.appendleft(jid)
                    handed_back += 1
                del tx.stopping[pod.id]

        # The autoscalers.
        tick = int(now)
        if autoscaled and tick % int(p.keda_poll_s) == 0:
            tx.keda_poll(in_flight, len(queue), saturated and in_flight > 0, budget)
        if autoscaled and tick % int(p.hpa_sync_s) == 0:
            tx.hpa_sync(now)
        if tick % int(p.kpa_tick_s) == 0:
            model.autoscale(now)

        ready, starting, stopping = tx.alive(now)
        if now < 0:  # the warm-up
            now += dt
            continue
        tx_pod_s += (ready + starting + stopping) * dt
        model_pod_s += len(model.pods) * dt
        acc["queue_max"] = max(acc.get("queue_max", 0), len(queue))
        acc["in_flight_max"] = max(acc.get("in_flight_max", 0), in_flight)
        if tick % 60 == 59:
            minutes.append(
                {
                    "minute": tick // 60,
                    "queue": len(queue),
                    "queue_max": acc["queue_max"],
                    "in_flight_max": acc["in_flight_max"],
                    "transcribers": ready + starting + stopping,
                    "transcribers_ready": ready,
                    "model_replicas": len(model.pods),
                    "model_ready": model.ready(now),
                    "chunks_waiting": model.waiting,
                    "oldest_wait_s": now - jobs[queue[0]].arrival if queue else 0.0,
                    "saturated": float(saturated),
                }
            )
            acc = {}
        now += dt
    return Result(
        "autoscaled" if autoscaled else "fixed",
        minutes,
        waits,
        latency,
        handed_back,
        tx_pod_s,
        model_pod_s,
        len(jobs),
        rounds,
    )


# --- the report -------------------------------------------------------------------------


def summary(p: Params, arr: Arrivals, result: Result) -> dict[str, Any]:
    in_day = (arr.times >= 0) & (arr.times < p.hours * 3600)
    waits = result.waits[in_day]
    served = waits[~np.isnan(waits)]
    burst_end_min = (p.burst_at_s + p.burst_s) / 60
    minutes = result.minutes
    outside = [
        m["queue_max"]
        for m in minutes
        if not (p.burst_at_s / 60 <= m["minute"] < burst_end_min + 5) and m["minute"] < p.hours * 60
    ]
    back = None
    if p.hours * 3600 > p.burst_at_s + p.burst_s:
        for m in minutes:
            if m["minute"] >= burst_end_min and m["queue_max"] < 10:
                back = m["minute"] - burst_end_min + 1
                break
    return {
        "scenario": result.name,
        "jobs": int(in_day.sum()),
        "served": int(served.size),
        "unfinished_at_end": result.unfinished,
        "wait_p50_s": float(np.percentile(served, 50)) if served.size else None,
        "wait_p99_s": float(np.percentile(served, 99)) if served.size else None,
        "wait_max_s": float(served.max()) if served.size else None,
        "latency_p50_s": float(np.nanpercentile(result.latency[in_day], 50)),
        "latency_p99_s": float(np.nanpercentile(result.latency[in_day], 99)),
        "queue_max_outside_burst": max(outside, default=0),
        "queue_max": max((m["queue_max"] for m in minutes), default=0),
        "minutes_back_to_single_digits_after_burst": back,
        "transcriber_max": max((m["transcribers"] for m in minutes), default=0),
        "model_max": max((m["model_replicas"] for m in minutes), default=0),
        "transcriber_replica_hours": round(result.transcriber_pod_s / 3600, 1),
        "model_replica_hours": round(result.model_pod_s / 3600, 1),
        "handed_back": result.handed_back,
        "dispatch_rounds": result.rounds,
    }


def plot(path: Path, p: Params, results: list[Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(12, 13), sharex=True)
    styles = {"autoscaled": "-", "fixed": ":"}
    for result in results:
        hours = [m["minute"] / 60 for m in result.minutes]
        style = styles[result.name]
        axes[0].plot(
            hours, [max(m["queue_max"], 0.5) for m in result.minutes], style, label=result.name
        )
        axes[1].plot(
            hours, [max(m["oldest_wait_s"], 0.5) for m in result.minutes], style, label=result.name
        )
        axes[2].plot(
            hours,
            [m["transcribers"] for m in result.minutes],
            style,
            label=f"{result.name}: transcribers",
        )
        axes[3].plot(
            hours,
            [m["model_replicas"] for m in result.minutes],
            style,
            label=f"{result.name}: model servers",
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("queue depth (max per minute; 0 at 0.5)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("oldest queued job's wait (s; 0 at 0.5)")
    axes[2].set_ylabel("transcriber replicas")
    axes[3].set_ylabel("model server replicas")
    axes[3].set_xlabel("hour of the day")
    for ax in axes:
        ax.axvspan(p.burst_at_s / 3600, (p.burst_at_s + p.burst_s) / 3600, color="0.9")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle(
        "SIMULATION, not a measurement: a day of the main user's traffic\n"
        "KEDA/HPA and Knative KPA as deployed, the orchestrator's own dispatch code, "
        "costs measured on 2 CPU cores with tiny.en"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def markdown(p: Params, rows: list[dict[str, Any]], seconds: float) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    keys = [
        ("jobs", "jobs arrived"),
        ("wait_p50_s", "queue wait p50 (s)"),
        ("wait_p99_s", "queue wait p99 (s)"),
        ("wait_max_s", "queue wait max (s)"),
        ("latency_p99_s", "enqueue to delivered p99 (s)"),
        ("queue_max_outside_burst", "queue depth max, outside the burst (+5 min)"),
        ("queue_max", "queue depth max"),
        ("minutes_back_to_single_digits_after_burst", "minutes to single digits after the burst"),
        ("transcriber_max", "transcriber replicas, most"),
        ("transcriber_replica_hours", "transcriber replica-hours"),
        ("model_max", "model server replicas, most"),
        ("model_replica_hours", "model server replica-hours"),
        ("handed_back", "jobs handed back by a scale-down"),
        ("unfinished_at_end", f"jobs unfinished {4} h after the day"),
    ]
    lines = [
        "# Capacity simulation (a SIMULATION, not a measurement)",
        "",
        f"{p.hours:g} h of traffic, seed {p.seed}; simulated in {seconds:.0f} s. "
        "Model: `bench/capacity_sim.py`'s docstring.",
        "",
        "| | " + " | ".join(r["scenario"] for r in rows) + " |",
        "| --- | " + " | ".join("---:" for _ in rows) + " |",
    ]
    for key, label in keys:
        lines.append(f"| {label} | " + " | ".join(fmt(r[key]) for r in rows) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--pod-start", type=float, default=20.0)
    parser.add_argument("--model-start", type=float, default=120.0)
    parser.add_argument("--model-max", type=int, default=400)
    parser.add_argument("--saturated-per-replica", type=float, default=88.0)
    parser.add_argument("--kpa-target", type=float, default=0.8)
    parser.add_argument("--only", choices=["autoscaled", "fixed"])
    parser.add_argument("--name", default="capacity-sim")
    parser.add_argument("--out", type=Path, default=benchlib.ROOT / "bench" / "results")
    args = parser.parse_args()
    p = Params(
        hours=args.hours,
        seed=args.seed,
        pod_start_s=args.pod_start,
        model_start_s=args.model_start,
        model_max=args.model_max,
        saturated_per_replica=args.saturated_per_replica,
        kpa_target=args.kpa_target,
    )
    started = time.monotonic()
    arr = arrivals(p)
    results = [
        simulate(p, arr, autoscaled)
        for autoscaled in (True, False)
        if args.only is None or args.only == ("autoscaled" if autoscaled else "fixed")
    ]
    rows = [summary(p, arr, r) for r in results]
    seconds = time.monotonic() - started
    for row in rows:
        print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()})
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(args.out / f"{args.name}-{date}.png", p, results)
    data = {
        "what": "a simulation, not a measurement",
        "params": p.__dict__,
        "summary": rows,
        "minutes": {r.name: r.minutes for r in results},
        "seconds": seconds,
        "commit": benchlib._git_commit(),
    }
    md = markdown(p, rows, seconds) + f"\nPlot: `{args.name}-{date}.png`.\n"
    for path in benchlib.write_results(args.out, args.name, data, md):
        print(path)


if __name__ == "__main__":
    main()
