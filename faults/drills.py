"""The drills. Each one starts a fresh stack, sends a stream of jobs, breaks something
while they run, waits for the system to settle, and hands the stack to
:func:`faults.checks.verify`; its own ``require`` checks prove the fault really hit.

Durations come from a :class:`Profile`: ``ci`` keeps every drill well under a minute on
two cores, ``full`` runs the faults as long as the issue asks (a minute without the model
server, minutes without the webhook receiver, 60 jobs a drill).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from faults import db
from faults.checks import Verdict, verify
from faults.db import Template, TenantKeys
from faults.stack import InFlightSampler, JobSpec, Stack, Submission, plan_jobs
from testkit.ports import free_port
from testkit.procs import Processes, Service


@dataclass(frozen=True)
class Profile:
    name: str
    jobs: int
    stream_seconds: float
    settle_timeout: float
    kill_down_seconds: float
    model_down_seconds: float
    receiver_down_seconds: float
    webhook_schedule: str
    pg_down_seconds: float
    idempotency_keys: int
    idempotency_concurrency: int
    fuzz_examples: int


PROFILES = {
    "ci": Profile(
        name="ci",
        jobs=10,
        stream_seconds=7,
        settle_timeout=120,
        kill_down_seconds=2,
        model_down_seconds=20,
        receiver_down_seconds=15,
        webhook_schedule="0.5,1,1,2,2,5,5,10",
        pg_down_seconds=6,
        idempotency_keys=8,
        idempotency_concurrency=6,
        fuzz_examples=50,
    ),
    "full": Profile(
        name="full",
        jobs=60,
        stream_seconds=60,
        settle_timeout=600,
        kill_down_seconds=10,
        model_down_seconds=60,
        receiver_down_seconds=240,
        webhook_schedule="1,2,5,10,20,30,60,60,60,60,60",
        pg_down_seconds=30,
        idempotency_keys=40,
        idempotency_concurrency=10,
        fuzz_examples=200,
    ),
}


@dataclass
class RunContext:
    """What the drills of one run share: the template database and the model server."""

    profile: Profile
    template: Template
    model_server_url: str
    workdir: Path
    #: ``always``, ``auto`` (only when no other client is using PostgreSQL) or ``never``:
    #: whether the PostgreSQL drill restarts the real server or only cuts off its database.
    pg_restart: str = "never"

    @property
    def tenants(self) -> list[TenantKeys]:
        return self.template.tenants


@dataclass
class DrillResult:
    name: str
    title: str
    profile: str
    passed: bool = False
    error: str | None = None
    seconds: float = 0.0
    settle_seconds: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""

    def summary(self) -> str:
        lines = [f"{self.name}: {'PASS' if self.passed else 'FAIL'} ({self.seconds:.0f} s)"]
        if self.error:
            lines.append(f"  error: {self.error.splitlines()[-1]}")
        for name, ok, detail in self.checks:
            if not ok:
                lines.append(f"  check failed: {name}: {detail}")
        for kind, items in self.verdict.get("violations", {}).items():
            lines.append(f"  {kind}: {len(items)}; first: {items[0]}")
        return "\n".join(lines)


class Drill:
    """One run of one drill: its stack, its timeline, its own checks."""

    def __init__(self, ctx: RunContext, result: DrillResult) -> None:
        self.ctx = ctx
        self.result = result
        self.profile = ctx.profile
        self.t0 = time.monotonic()
        self.stack: Stack | None = None
        self.workdir = ctx.workdir / result.name
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        result.workdir = str(self.workdir)

    def mark(self, what: str) -> None:
        self.result.timeline.append((round(time.monotonic() - self.t0, 2), what))

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        self.result.checks.append((name, bool(ok), detail))

    def new_stack(self, database_url: str, **options: Any) -> Stack:
        self.stack = Stack(
            name=self.result.name,
            database_url=database_url,
            tenants=self.ctx.tenants,
            model_server_url=self.ctx.model_server_url,
            workdir=self.workdir,
            **options,
        )
        return self.stack

    def jobs(self, count: int | None = None, **kwargs: Any) -> list[JobSpec]:
        return plan_jobs(count or self.profile.jobs, self.ctx.tenants, **kwargs)

    async def at(self, fraction: float, of: float | None = None) -> None:
        """Sleep until ``fraction`` of the stream time has passed since the stream began."""
        target = self.stream_t0 + fraction * (of or self.profile.stream_seconds)
        await asyncio.sleep(max(target - time.monotonic(), 0))

    def start_stream(self, specs: list[JobSpec], over: float | None = None) -> asyncio.Task[Any]:
        assert self.stack is not None
        self.stream_t0 = time.monotonic()
        self.mark(f"stream of {len(specs)} jobs starts")
        return asyncio.create_task(self.stack.stream(specs, over or self.profile.stream_seconds))

    async def settle(self, stream: asyncio.Task[Any], since: str = "fault cleared") -> Verdict:
        """Wait for the stream and for every job to end, then verify."""
        assert self.stack is not None
        await stream
        self.mark("every job accepted")
        settled = await self.stack.wait_settled(self.profile.settle_timeout)
        self.result.settle_seconds = None if settled is None else round(settled, 1)
        self.mark("settled" if settled is not None else "NOT settled (timeout)")
        self.require(
            "every job terminal within the settle timeout",
            settled is not None,
            f"{self.profile.settle_timeout:g} s",
        )
        alive = {s.name: s.alive for s in self.stack.procs.services}
        self.require(
            "every service process still running",
            all(alive.values()),
            ", ".join(n for n, up in alive.items() if not up) or "all up",
        )
        verdict = await verify(self.stack)
        self.result.verdict = verdict.as_dict()
        return verdict

    async def in_flight_now(self) -> int:
        assert self.stack is not None
        rows = await self.stack.query(
            "SELECT count(*) AS n FROM jobs WHERE status IN ('TRIGGERED','PROCESSING')"
        )
        return int(rows[0]["n"])

    async def wait_in_flight(self, at_least: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n = await self.in_flight_now()
            if n >= at_least:
                return n
            await asyncio.sleep(0.1)
        return n


async def _until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


DrillFunction = Callable[[Drill, str], Awaitable[None]]
DRILLS: dict[str, tuple[str, DrillFunction]] = {}


def drill(name: str, title: str) -> Callable[[DrillFunction], DrillFunction]:
    def register(fn: DrillFunction) -> DrillFunction:
        DRILLS[name] = (title, fn)
        return fn

    return register


async def run_drill(ctx: RunContext, name: str) -> DrillResult:
    """Run one drill on a fresh database; never raises (an error fails the drill)."""
    title, fn = DRILLS[name]
    result = DrillResult(name, title, ctx.profile.name)
    started = time.monotonic()
    database_url = await ctx.template.fresh(name)
    d = Drill(ctx, result)
    try:
        await fn(d, database_url)
    except Exception:
        result.error = traceback.format_exc()
    finally:
        try:
            if d.stack is not None:
                await d.stack.close()
        finally:
            with contextlib.suppress(Exception):
                await db.drop(database_url)
    result.seconds = round(time.monotonic() - started, 1)
    result.passed = (
        result.error is None
        and all(ok for _, ok, _ in result.checks)
        and bool(result.verdict.get("passed", name == "api-fuzz"))
    )
    return result


# --- 1. the transcriber killed --------------------------------------------------------


@drill("transcriber-kill", "Transcriber replicas killed with SIGKILL mid-job, then restarted")
async def transcriber_kill(d: Drill, database_url: str) -> None:
    """Two transcriber replicas behind the balancer. While jobs run, replica 1 is killed
    (SIGKILL to its process group) and restarted, then replica 2; the full profile also
    kills both at once. Jobs they held keep their lease until it expires (3 s), come back
    as FAILED/WORKER_LOST and are retried; a chunk already transcribed is not redone."""
    # In the full profile the limit (6) is above one replica's WORKER_MAX_JOBS (4): while
    # one is dead, the other refuses triggers beyond its four, and the drill counts the
    # requeues (see test_known_bugs.py). CI keeps 4, so the loop does not eat its time.
    env = {"MAX_CONCURRENT_TRANSCRIPTION_JOBS": "6" if d.profile.name == "full" else "4"}
    async with d.new_stack(database_url, transcribers=2, env=env) as stack:
        # A short clip takes well under a second on an idle machine: too short for the
        # kills to find work in flight. A slower model (2 s per chunk) keeps jobs running.
        stack.model.delay_seconds = 2.0
        stream = d.start_stream(d.jobs())
        rounds = [[0], [1]] + ([[0, 1]] if d.profile.name == "full" else [])
        for i, victims in enumerate(rounds):
            await d.at(0.2 + 0.6 * i / len(rounds))
            # One replica at a time (but the last round): the others are up first.
            await asyncio.gather(*(t.wait_ready() for t in stack.transcribers))
            # Kill while the replicas hold work: two jobs in flight, or at least one.
            n = await d.wait_in_flight(2, timeout=15) or await d.wait_in_flight(1, timeout=30)
            for v in victims:
                stack.transcribers[v].kill()
            d.mark(
                f"SIGKILL {'+'.join(stack.transcribers[v].name for v in victims)} "
                f"({n} jobs in flight)"
            )
            await asyncio.sleep(d.profile.kill_down_seconds)
            for v in victims:
                stack.transcribers[v].start()  # the balancer skips it until it listens
            d.mark("restart")
        await asyncio.gather(*(t.wait_ready() for t in stack.transcribers))
        verdict = await d.settle(stream)
        d.require(
            "the kills hit jobs in flight (WORKER_LOST events)",
            verdict.worker_lost > 0,
            f"{verdict.worker_lost} WORKER_LOST events",
        )
        kills = sum(t.kills for t in stack.transcribers)
        d.result.numbers.update(
            kills=kills,
            balancer_refused=stack.lb.refused,
            trigger_requeues=verdict.refused_triggers,
        )


# --- 2. the orchestrator killed; two at once -------------------------------------------


@drill("orchestrator-kill", "Orchestrator killed and restarted; two orchestrators at once")
async def orchestrator_kill(d: Drill, database_url: str) -> None:
    """One orchestrator, SIGKILLed and restarted; then a second one joins and both run
    together while the first is killed and restarted again. The in-flight count is
    sampled every 100 ms from the database and must never pass the limit (4)."""
    limit = 4
    env = {"MAX_CONCURRENT_TRANSCRIPTION_JOBS": str(limit)}
    async with d.new_stack(database_url, transcribers=2, orchestrators=1, env=env) as stack:
        sampler = InFlightSampler(database_url, 0.1)
        sampler.start()
        try:
            stream = d.start_stream(d.jobs())
            await d.at(0.2)
            first = stack.orchestrators[0]
            first.kill()
            d.mark(f"SIGKILL {first.name}")
            await asyncio.sleep(d.profile.kill_down_seconds)
            await stack.restart(first)
            d.mark(f"{first.name} restarted")
            await d.at(0.45)
            second = stack.add_orchestrator()
            second.start()
            await second.wait_ready()
            d.mark(f"{second.name} joins: two orchestrators")
            await d.at(0.7)
            first.kill()
            d.mark(f"SIGKILL {first.name} (the other keeps going)")
            await asyncio.sleep(d.profile.kill_down_seconds)
            await stack.restart(first)
            d.mark(f"{first.name} restarted: two again")
            verdict = await d.settle(stream)
        finally:
            await sampler.stop()
        over = [(t, c) for t, c in sampler.samples if c > limit]
        d.require(
            f"in flight never above the limit of {limit}",
            not over,
            f"peak {sampler.peak} over {len(sampler.samples)} samples",
        )
        d.require(
            "the limit was reached (the check means something)",
            sampler.peak >= limit,
            f"peak {sampler.peak}",
        )
        d.result.numbers.update(
            in_flight_peak=sampler.peak,
            in_flight_samples=len(sampler.samples),
            in_flight_limit=limit,
            worker_lost=verdict.worker_lost,
        )


# --- 3. PostgreSQL restarted under load ------------------------------------------------


def _cluster() -> tuple[str, str] | None:
    """(version, name) of the local cluster pg_ctlcluster manages, if we may manage it."""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        return None
    if make_url(db.admin_url()).host not in ("127.0.0.1", "localhost", None):
        return None
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return (versions[-1], "main") if versions else None


def _pg_ctl(action: str, cluster: tuple[str, str]) -> int:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], action],
        capture_output=True,
        timeout=120,
        check=False,
    ).returncode


async def _pg_up(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            await db.admin("SELECT 1")
            return True
        await asyncio.sleep(0.5)
    return False


async def _foreign_clients(database_url: str) -> list[str]:
    """Client connections to other databases than the drill's (other people's work)."""
    ours = make_url(database_url).database
    conn = await asyncpg.connect(db.dsn(db.admin_url()), timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT datname, application_name FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND datname IS DISTINCT FROM $1 AND datname NOT LIKE 'faults_tmpl_%'",
            ours,
        )
    finally:
        await conn.close()
    return [f"{r['datname']}/{r['application_name']}" for r in rows]


class PostgresFault:
    """Cuts the drill's database off. ``real``: the server itself restarts (or stops and
    starts); otherwise the drill's database refuses connections (``ALLOW_CONNECTIONS
    false``) and its sessions are terminated, which the services see the same way."""

    def __init__(self, database_url: str, real: tuple[str, str] | None) -> None:
        self.name = make_url(database_url).database
        self.real = real

    async def outage(self, seconds: float) -> None:
        if self.real is not None:
            try:
                if seconds <= 0:
                    await asyncio.to_thread(_pg_ctl, "restart", self.real)
                else:
                    await asyncio.to_thread(_pg_ctl, "stop", self.real)
                    await asyncio.sleep(seconds)
            finally:
                await self.ensure_up()
            return
        try:
            await db.admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
            await db.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
            )
            await asyncio.sleep(seconds)
        finally:
            await self.ensure_up()

    async def ensure_up(self) -> None:
        """PostgreSQL running and the database open, whatever happened before."""
        if self.real is not None and not await _pg_up(2):
            await asyncio.to_thread(_pg_ctl, "start", self.real)
            await _pg_up(60)
        with contextlib.suppress(Exception):
            await db.admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


@drill("postgres-restart", "PostgreSQL restarted under load, then down for a while")
async def postgres_restart(d: Drill, database_url: str) -> None:
    """While jobs run: a quick restart, then an outage of ``pg_down_seconds``. With the
    real server (``--pg-restart``), ``pg_ctlcluster restart`` then ``stop``/``start``;
    otherwise the drill's database refuses connections and its sessions are killed. The
    services must ride it out: the enqueue API answers again, the orchestrator's LISTEN
    reconnects, the worker's final writes land or the lease expires and the job is
    retried."""
    real = None
    cluster = _cluster()
    if d.ctx.pg_restart != "never" and cluster is not None:
        others: list[str] = []
        for _ in range(60 if d.ctx.pg_restart == "auto" else 1):
            others = await _foreign_clients(database_url)
            if not others:
                break
            await asyncio.sleep(1)
        if not others or d.ctx.pg_restart == "always":
            real = cluster
        else:
            d.mark(f"other clients on the server ({len(others)}): database-level outage instead")
    fault = PostgresFault(database_url, real)
    d.result.numbers["mode"] = "server restart" if real else "database cut off"
    try:
        async with d.new_stack(database_url, transcribers=2) as stack:
            stream = d.start_stream(d.jobs())
            await d.at(0.25)
            await d.wait_in_flight(2, timeout=10)
            d.mark("outage 1: " + ("pg_ctlcluster restart" if real else "connections cut (1 s)"))
            await fault.outage(0 if real else 1)
            d.mark("PostgreSQL back")
            await d.at(0.6)
            await d.wait_in_flight(2, timeout=10)
            d.mark(f"outage 2: down for {d.profile.pg_down_seconds:g} s")
            await fault.outage(d.profile.pg_down_seconds)
            d.mark("PostgreSQL back")
            verdict = await d.settle(stream)

            async def listening() -> int:
                rows = await stack.query(
                    "SELECT count(*) AS n FROM pg_stat_activity "
                    "WHERE application_name = 'transcription-orchestrator-listen' "
                    "AND datname = current_database()"
                )
                return int(rows[0]["n"])

            # The jobs may settle before the listener's next reconnect (every 2 s).
            deadline = time.monotonic() + 15
            n = await listening()
            while n < len(stack.orchestrators) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                n = await listening()
            d.require(
                "the orchestrator's LISTEN connection came back (one, not more)",
                n == len(stack.orchestrators),
                f"{n} listening",
            )
            five = sum(v for k, v in verdict.client_answers.items() if k.startswith("5"))
            d.result.numbers.update(
                enqueue_5xx_during_outage=five,
                client_answers=verdict.client_answers,
                worker_lost=verdict.worker_lost,
            )
    finally:
        await fault.ensure_up()
        d.require("PostgreSQL running at the end", await _pg_up(30))


# --- 4. the model server failing, then down -------------------------------------------


@drill("model-faults", "Model server: 500/503 to a third of the chunks, then down")
async def model_faults(d: Drill, database_url: str) -> None:
    """A proxy in front of the real model server answers 500 or 503 (Retry-After: 1) to a
    third of the chunk requests throughout, and stops listening for ``model_down_seconds``
    in the middle. In-attempt retries absorb the errors; the outage turns attempts into
    MODEL_ERROR, retried with backoff until the model is back."""
    env = {"MAX_ATTEMPTS": "10", "RETRY_BACKOFF_SECONDS": "0.5"}
    async with d.new_stack(database_url, transcribers=2, env=env) as stack:
        stack.model.fail_ratio = 1 / 3
        stream = d.start_stream(d.jobs())
        await d.at(0.3)
        await stack.model.stop()
        d.mark(f"model server down (proxy not listening) for {d.profile.model_down_seconds:g} s")
        await asyncio.sleep(d.profile.model_down_seconds)
        await stack.model.start()
        d.mark("model server back (still failing a third)")
        verdict = await d.settle(stream)
        counts = dict(stack.model.counts)
        d.require(
            "500s and 503s were injected",
            counts.get("answered 500", 0) > 0 and counts.get("answered 503", 0) > 0,
            str(counts),
        )
        d.require(
            "model failures are never NO_AUDIO_FOUND",
            "NO_AUDIO_FOUND" not in verdict.by_reason,
            str(verdict.by_reason),
        )
        model_errors = sum(v for k, v in verdict.transitions.items() if k == "PROCESSING->FAILED")
        d.result.numbers.update(proxy=counts, attempts_failed=model_errors)


# --- 5. the webhook receiver down ------------------------------------------------------


@drill("receiver-down", "Webhook receiver too slow, answering 503, then down, then back")
async def receiver_down(d: Drill, database_url: str) -> None:
    """First the receiver takes 3 s to answer, past the sender's 2 s timeout: the message
    arrived but the sender does not know, so it sends it again (an at-least-once
    duplicate, same webhook-id, same content). Then it answers 503 (Retry-After: 2) for a
    third of ``receiver_down_seconds`` and stops listening for the rest. Transcripts are
    kept (SEND_FAILED) and sent again on the webhook schedule with the same webhook-id;
    none is transcribed twice."""
    env = {"WEBHOOK_RETRY_SCHEDULE": d.profile.webhook_schedule, "WEBHOOK_TIMEOUT_SECONDS": "2"}
    async with d.new_stack(database_url, transcribers=2, env=env) as stack:
        stack.receiver.delay = 3.0
        stream = d.start_stream(d.jobs())
        d.mark("receiver answers after 3 s (the sender's timeout is 2 s)")
        await _until(lambda: len(stack.receiver.deliveries) >= 4, timeout=30)
        stack.receiver.delay = 0.0
        d.mark(f"receiver answers at once again ({len(stack.receiver.deliveries)} received)")
        down = d.profile.receiver_down_seconds
        stack.receiver.answer, stack.receiver.retry_after = 503, "2"
        d.mark("receiver answers 503")
        await asyncio.sleep(down / 3)
        await stack.receiver.stop()
        d.mark("receiver down (not listening)")
        await asyncio.sleep(down * 2 / 3)
        stack.receiver.answer, stack.receiver.retry_after = 200, None
        await stack.receiver.start()
        d.mark("receiver back")
        verdict = await d.settle(stream)
        send_failed = sum(v for k, v in verdict.transitions.items() if k.endswith("SEND_FAILED"))
        d.require(
            "deliveries failed during the outage (SEND_FAILED)",
            send_failed > 0,
            f"{send_failed} SEND_FAILED transitions",
        )
        forwarded = stack.model.counts.get("forwarded", 0)
        d.require(
            "no transcript transcribed twice (one chunk request per job)",
            forwarded == verdict.jobs,
            f"{forwarded} chunk requests, {verdict.jobs} jobs",
        )
        d.require(
            "the slow receiver caused repeats of one webhook-id",
            verdict.duplicate_deliveries > 0,
            f"{verdict.duplicate_deliveries} repeats",
        )
        d.result.numbers.update(
            send_failed=send_failed,
            chunk_requests=forwarded,
            refused_503=sum(1 for x in stack.receiver.deliveries if x.answered == 503),
        )


# --- 6. the media server misbehaving --------------------------------------------------

MEDIA_BEHAVIOURS: list[tuple[str, str, str | None]] = [
    ("slow", "SUCCEEDED", None),
    ("reset1", "SUCCEEDED", None),
    ("stall1", "SUCCEEDED", None),
    ("status503x2", "SUCCEEDED", None),
    ("status403", "PERMAFAILED", "DOWNLOAD_FORBIDDEN"),
    ("reset2", "SUCCEEDED", None),
    ("status404", "PERMAFAILED", "DOWNLOAD_NOT_FOUND"),
    ("ok", "SUCCEEDED", None),
]


@drill("media-faults", "Media server slow, resetting connections, stalling, expired URLs")
async def media_faults(d: Drill, database_url: str) -> None:
    """Each job's URL carries its fault: a slow trickle (3 s), a TCP reset mid-body (the
    first one or two requests), a stall past the read timeout, 503 twice, an expired URL
    (403: PERMAFAILED DOWNLOAD_FORBIDDEN, one transcription.failed webhook, no retry),
    a deleted asset (404: DOWNLOAD_NOT_FOUND)."""
    env = {"DOWNLOAD_READ_TIMEOUT_SECONDS": "2"}
    behaviours = {i: MEDIA_BEHAVIOURS[i % len(MEDIA_BEHAVIOURS)] for i in range(d.profile.jobs)}
    specs = d.jobs(behaviours=behaviours)
    async with d.new_stack(database_url, transcribers=2, env=env) as stack:
        stream = d.start_stream(specs)
        await d.settle(stream)
        hits = stack.media.hits
        jobs = {
            r["external_id"]: dict(r)
            for r in await stack.query("SELECT external_id, status, attempts FROM jobs")
        }
        messages = Counter(x.job_id for x in stack.receiver.deliveries)
        ids = {sub.spec.key: sub.job_id for sub in stack.submissions}
        once, retried, one_message = [], [], []
        for spec in specs:
            n = hits[spec.key]
            if spec.behaviour in ("status403", "status404"):
                once.append(n == 1 and jobs.get(spec.key, {}).get("attempts") == 1)
                one_message.append(messages[ids.get(spec.key)] == 1)
            elif spec.behaviour.startswith(("reset", "stall", "status503")):
                retried.append(n >= 2)
        d.require(
            "expired and deleted URLs were fetched once, in one attempt",
            all(once),
            f"{sum(once)}/{len(once)}",
        )
        d.require(
            "one transcription.failed webhook for each expired or deleted URL",
            all(one_message),
            f"{sum(one_message)}/{len(one_message)}",
        )
        d.require(
            "reset, stalled and 503 downloads were tried again",
            all(retried),
            f"{sum(retried)}/{len(retried)}",
        )
        outcomes = Counter(e.outcome for e in stack.media.log)
        d.result.numbers.update(media_requests=dict(outcomes))


# --- 7. duplicate enqueues with one Idempotency-Key ------------------------------------


@drill("idempotency-race", "Concurrent duplicate enqueues with one Idempotency-Key")
async def idempotency_race(d: Drill, database_url: str) -> None:
    """Two enqueue replicas. For each of ``idempotency_keys`` keys, ``concurrency`` POSTs
    with the same key and body go out at once, spread over both replicas; one more with the
    same key and another body must be refused (409). Exactly one job per key, one 202,
    every other answer 200 with the same id, no 5xx; then every job runs to its webhook."""
    keys = d.profile.idempotency_keys
    fan = d.profile.idempotency_concurrency
    specs = d.jobs(keys, jfk_every=0)
    async with d.new_stack(database_url, transcribers=2, enqueues=2) as stack:
        d.stream_t0 = time.monotonic()
        d.mark(f"{keys} keys x {fan} concurrent POSTs")

        async def one(spec: JobSpec) -> tuple[str, int, str | None]:
            try:
                response = await stack.post_job(spec)
            except Exception as exc:
                return spec.key, 0, type(exc).__name__
            job_id = response.json().get("id") if response.status_code in (200, 202) else None
            return spec.key, response.status_code, job_id

        answers = await asyncio.gather(*(one(s) for s in specs for _ in range(fan)))
        d.mark("all duplicate POSTs answered")
        by_key: dict[str, list[tuple[int, str | None]]] = {}
        for key, status, job_id in answers:
            by_key.setdefault(key, []).append((status, job_id))
        codes = Counter(status for _, status, _ in answers)
        one_created = all(sum(1 for s, _ in v if s == 202) == 1 for v in by_key.values())
        one_id = all(len({j for s, j in v if s in (200, 202)}) == 1 for v in by_key.values())
        d.require(
            "no 5xx and no dropped request", all(200 <= c < 500 for c in codes), str(dict(codes))
        )
        d.require("exactly one 202 per key", one_created, str(dict(codes)))
        d.require("every 200/202 for a key names the same job", one_id)
        conflict = await stack.post_job(
            specs[0], body={**stack.body(specs[0]), "external_id": "another body"}
        )
        d.require(
            "the same key with another body is 409",
            conflict.status_code == 409,
            str(conflict.status_code),
        )
        # The careful client's view: one accepted job per key (also feeds the verdict).
        for spec in specs:
            await stack.submit(spec)
        stream: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(0))
        verdict = await d.settle(stream)
        d.result.numbers.update(
            answers=dict(codes), keys=keys, posts_per_key=fan, jobs_created=verdict.jobs
        )


# --- 8. the enqueue API fuzzed from its own OpenAPI document ---------------------------


@drill("api-fuzz", "schemathesis fuzzing of the enqueue API: no 5xx")
async def api_fuzz(d: Drill, database_url: str) -> None:
    from faults.fuzz import fuzz_enqueue

    async with d.new_stack(
        database_url, transcribers=0, orchestrators=0, env={"ALLOW_PRIVATE_URLS": "false"}
    ) as stack:
        await fuzz_enqueue(d, stack)


# --- 9. hostile peers: every job ends, every resource stays bounded ------------------

#: (media behaviour, webhook behaviour, expected status, expected reason) per hostile job.
HOSTILE_JOBS: list[tuple[str, str, str, str | None]] = [
    ("drip", "ok", "PERMAFAILED", "DOWNLOAD_FAILED"),
    ("drip", "ok", "PERMAFAILED", "DOWNLOAD_FAILED"),
    ("redirect6to4", "ok", "PERMAFAILED", "DOWNLOAD_FORBIDDEN"),
    ("ok", "drip", "PERMAFAILED", "WEBHOOK_FAILED"),
    ("ok", "drip", "PERMAFAILED", "WEBHOOK_FAILED"),
    ("ok", "huge", "SUCCEEDED", None),
]
#: A job of the drill may be triggered this often at most (MAX_ATTEMPTS 2 plus 4
#: deliveries, with room) and write this many events at most.
HOSTILE_MAX_ATTEMPTS = 12
HOSTILE_MAX_EVENTS = 40
#: The transcriber's resident memory must stay under this while a receiver answers 1 GiB.
HOSTILE_MAX_RSS_MB = 400

#: Requests the enqueue API must refuse with 422 (field, value), whatever their size.
_HOSTILE_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("webhook_url", {"webhook_url": "https://" + "a" * 64 + ".example.com/hook"}),
    ("webhook_url", {"webhook_url": "https://exa\tmple.com/hook"}),
    ("webhook_url", {"webhook_url": "http://[2002:a9fe:a9fe::1]/hook"}),
    ("media_url", {"media_url": "http://[64:ff9b::a9fe:a9fe]/a.mp3"}),
    ("metadata", {}),  # 300 levels deep: made in _hostile_requests
    ("external_id", {"external_id": "nul\u0000byte"}),
]


async def _peak_rss_mb(services: list[Service], stop: asyncio.Event) -> float:
    """The largest resident set of ``services`` (and their children) until ``stop``."""
    import psutil

    peak = 0.0
    while not stop.is_set():
        for service in services:
            if service.process is None or service.process.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(service.process.pid)
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                peak = max(peak, rss / 2**20)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return peak


@drill("hostile-peers", "Media and webhook peers that drip, answer 1 GiB, redirect to 6to4")
async def hostile_peers(d: Drill, database_url: str) -> None:
    """One transcriber of two slots, private addresses refused but for loopback. Among
    ordinary jobs: media that drips one byte every 0.5 s (fails as too slow, never holds
    a slot for long), media that redirects to a 6to4 address embedding 169.254.169.254
    (refused), receivers that drip their answer (the delivery deadline ends each
    exchange; the job ends WEBHOOK_FAILED after the schedule), a receiver that answers
    200 with a 1 GiB body (delivered; the transcriber reads a few KiB of it). Hostile
    requests to the enqueue API are refused with 422. Every job ends within the bounds,
    the ordinary ones SUCCEEDED, and the transcriber's memory stays bounded. One more job
    is written straight into the store with a webhook host no resolver takes, as the
    enqueue accepted before its guard: it ends WEBHOOK_FAILED, within the bounds."""
    env = {
        "ALLOW_PRIVATE_URLS": "false",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
        "WORKER_MAX_JOBS": "2",
        "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "2",
        "MAX_ATTEMPTS": "2",
        "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "DOWNLOAD_READ_TIMEOUT_SECONDS": "5",
        "DOWNLOAD_MIN_BYTES_PER_SECOND": "65536",
        "DOWNLOAD_MIN_RATE_WINDOW_SECONDS": "2",
    }
    ordinary = max(d.profile.jobs - len(HOSTILE_JOBS), 4)
    specs = d.jobs(ordinary + len(HOSTILE_JOBS))
    for spec, (media, webhook, status, reason) in zip(specs[ordinary:], HOSTILE_JOBS, strict=True):
        spec.behaviour, spec.webhook = media, webhook
        spec.expect_status, spec.expect_reason = status, reason
    async with d.new_stack(database_url, transcribers=1, env=env) as stack:
        stop = asyncio.Event()
        rss = asyncio.create_task(_peak_rss_mb(stack.transcribers, stop))
        refused = await _hostile_requests(stack, specs[0])
        d.require(
            "hostile requests refused with 422 naming the field",
            all(ok for _, ok in refused),
            ", ".join(f"{field}: {'ok' if ok else 'NOT refused'}" for field, ok in refused),
        )
        await _stored_before_the_guard(stack, specs[0])
        stream = d.start_stream(specs)
        verdict = await d.settle(stream)
        stop.set()
        peak = await rss
        attempts = await stack.query("SELECT max(attempts) AS n FROM jobs")
        events = await stack.query(
            "SELECT max(n) AS n FROM (SELECT count(*) AS n FROM job_events GROUP BY job_id) x"
        )
        most_attempts, most_events = int(attempts[0]["n"] or 0), int(events[0]["n"] or 0)
        d.require(
            f"no job triggered more than {HOSTILE_MAX_ATTEMPTS} times",
            most_attempts <= HOSTILE_MAX_ATTEMPTS,
            f"most attempts: {most_attempts}",
        )
        d.require(
            f"no job with more than {HOSTILE_MAX_EVENTS} events",
            most_events <= HOSTILE_MAX_EVENTS,
            f"most events: {most_events}",
        )
        d.require(
            f"the transcriber stayed under {HOSTILE_MAX_RSS_MB} MB",
            0 < peak < HOSTILE_MAX_RSS_MB,
            f"peak RSS {peak:.0f} MB",
        )
        d.require(
            "the 1 GiB answer was not read whole",
            0 < stack.receiver.huge_sent < 2**30,
            f"{stack.receiver.huge_sent / 2**20:.0f} MiB left the receiver",
        )
        d.result.numbers.update(
            transcriber_peak_rss_mb=round(peak),
            huge_body_mib_sent=round(stack.receiver.huge_sent / 2**20, 1),
            most_attempts=most_attempts,
            most_events=most_events,
            media_requests=dict(Counter(e.outcome for e in stack.media.log)),
            by_reason=verdict.by_reason,
        )


#: A webhook host no resolver takes: the enqueue refuses it now, but a row stored before
#: it did used to loop forever (each delivery raised UnicodeError).
UNRESOLVABLE_WEBHOOK = "http://" + "a" * 64 + ".example/hook"


async def _stored_before_the_guard(stack: Stack, like: JobSpec) -> None:
    """A job with :data:`UNRESOLVABLE_WEBHOOK` written straight into the store, as one
    accepted before the guard existed; it must end WEBHOOK_FAILED within the bounds."""
    from transcription_core import repository as repo
    from transcription_core.db import create_engine

    spec = JobSpec(
        key=f"{like.key}-stored-before",
        tenant=like.tenant,
        file="hotwords.mp3",
        expect_status="PERMAFAILED",
        expect_reason="WEBHOOK_FAILED",
        webhook="unresolvable",
    )
    engine = create_engine(stack.database_url, "drill")
    try:
        async with engine.begin() as conn:
            job = await repo.insert_job(
                conn,
                repo.NewJob(
                    tenant=spec.tenant,
                    media_url=stack.media.media_url(spec.key, "ok", spec.file),
                    webhook_url=UNRESOLVABLE_WEBHOOK,
                    external_id=spec.key,
                ),
            )
    finally:
        await engine.dispose()
    stack.submissions.append(Submission(spec, job_id=job.id, answers=["stored"]))


async def _hostile_requests(stack: Stack, spec: JobSpec) -> list[tuple[str, bool]]:
    """Send each hostile body; whether it was refused with 422 naming its field."""
    assert stack.http is not None
    results: list[tuple[str, bool]] = []
    for field_name, override in _HOSTILE_BODIES:
        body = {**stack.body(spec), **override}
        if field_name == "metadata":
            body["metadata"] = _nested(300)  # a body of about 2 KiB
        response = await stack.post_job(spec, key=f"hostile-{field_name}-{len(results)}", body=body)
        named = response.status_code == 422 and field_name in response.text
        results.append((field_name, named))
    return results


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


DRILL_ORDER = list(DRILLS)


def known(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise SystemExit(f"unknown drill(s) {unknown}; one of {list(DRILLS)}")
    return names


async def start_model_server(workdir: Path, procs: Processes) -> Service:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    service = procs.add(
        Service(
            "model-server",
            "model-server",
            free_port(),
            {"MODEL": "tiny.en", "MAX_BATCH_SIZE": "4", "LOG_LEVEL": "WARNING"},
            workdir / "model-server.log",
        )
    )
    service.start()
    await service.wait_ready(timeout=180, path="/readyz")
    return service
