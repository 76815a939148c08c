"""Dispatch follows the transcribers' capacity, on real processes and real PostgreSQL.

Three transcriber processes of two slots each and a budget of 100: 30 queued jobs run six
at a time, and no trigger is refused. One transcriber is killed (SIGKILL, as the OOM
killer or a node loss would): its jobs are recovered when their lease expires, and in
flight drops to the four slots left. It comes back (as the kubelet restarts it) and a
fourth starts: eight at a time. Every job ends SUCCEEDED and is delivered once.

The model server is a stand-in (:class:`StandInModel`) that answers every chunk after a
fixed delay, so jobs last long enough to be counted and no model is loaded; it holds
the chunks while the two processes start, so the 30 jobs do not run out before.
Durations are not asserted: the test prints how long the recovery took.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from faults import db
from faults.checks import verify
from faults.stack import InFlightSampler, Stack, plan_jobs
from testkit.asgi import wait_for
from testkit.procs import Service
from testkit.rawhttp import HttpServer, Request, write_response

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

#: Seconds the stand-in model takes for each chunk (each job here has one).
CHUNK_SECONDS = 2.0
JOBS = 30


class StandInModel(HttpServer):
    """Not a model: answers ``/v1/predict`` after ``delay`` seconds with one segment,
    and holds every chunk while ``open`` is cleared."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.chunks = 0
        #: Chunks waiting for ``open``.
        self.held = 0
        self.open = asyncio.Event()
        self.open.set()

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if request.path.startswith("/v1/predict"):
            self.chunks += 1
            self.held += 1
            try:
                await self.open.wait()
            finally:
                self.held -= 1
            await asyncio.sleep(self.delay)
            seconds = round(len(request.body) / 32000, 3)
            body = {
                "segments": [{"start": 0.0, "end": seconds, "text": " stand-in"}],
                "language": "en",
                "language_probability": 1.0,
                "duration": seconds,
                "model": "stand-in",
            }
        else:
            body = {"status": "ok"}
        await write_response(
            writer, 200, json.dumps(body).encode(), {"content-type": "application/json"}
        )
        return True


@pytest.fixture(scope="module")
def template() -> Iterator[db.Template]:
    try:
        asyncio.run(db.admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    template = db.Template()
    asyncio.run(template.create())
    try:
        yield template
    finally:
        asyncio.run(template.close())


async def _in_flight(stack: Stack) -> int:
    rows = await stack.query(
        "SELECT count(*) AS n FROM jobs WHERE status IN ('TRIGGERED', 'PROCESSING')"
    )
    return int(rows[0]["n"])


async def _succeeded(stack: Stack) -> int:
    rows = await stack.query("SELECT count(*) AS n FROM jobs WHERE status = 'SUCCEEDED'")
    return int(rows[0]["n"])


async def _metric(http: httpx.AsyncClient, service: Service, name: str) -> float:
    total = 0.0
    for line in (await http.get(service.url + "/metrics")).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _peak(sampler: InFlightSampler, start: float, end: float | None = None) -> int:
    return max(
        (n for t, n in sampler.samples if t >= start and (end is None or t <= end)), default=0
    )


def _three_transcribers(
    name: str, url: str, template: db.Template, model: StandInModel, workdir: Any
) -> Stack:
    """Three transcribers of two slots each, the global budget out of the way."""
    return Stack(
        name=name,
        database_url=url,
        tenants=template.tenants,
        model_server_url=model.url,
        workdir=workdir,
        transcribers=3,
        env={"WORKER_MAX_JOBS": "2", "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "100"},
    )


async def scenario(template: db.Template, workdir: Any) -> dict[str, Any]:
    url = await template.fresh("capacity")
    model = StandInModel(CHUNK_SECONDS)
    await model.start()
    stack = _three_transcribers("capacity", url, template, model, workdir)
    sampler = InFlightSampler(url, interval=0.05)
    out: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    try:
        async with stack:
            sampler.start()
            specs = plan_jobs(JOBS, template.tenants, jfk_every=0)  # 4 s each: one chunk
            await stack.stream(specs, over_seconds=0.5)

            # Six at a time: wait for a first wave to finish, the second is running.
            phase1 = loop.time()
            await wait_for(lambda: _succeeded(stack), timeout=60)
            await wait_for(lambda: _in_flight_is(stack, 6), timeout=30)
            out["six"] = _peak(sampler, _wall(loop, phase1))

            # A replica killed while it runs two jobs. The model holds every chunk first,
            # so that no job ends between the count and the kill (each job has one chunk:
            # six held chunks are the six jobs in flight).
            model.open.clear()
            await wait_for(lambda: _held_is(model, 6), timeout=60)
            victim = stack.transcribers[2]
            assert stack.http is not None
            answer = await stack.http.get(victim.url + "/v1/capacity")
            out["victim_running"] = answer.json()["jobs"]["running"]
            lost_before = await _worker_lost(stack)
            victim.kill()
            killed = _wall(loop, loop.time())
            model.open.set()
            await wait_for(
                lambda: _lost_since(stack, lost_before, out["victim_running"]), timeout=60
            )
            recovered = _wall(loop, loop.time())
            out["recovered_after_seconds"] = round(recovered - killed, 1)
            done_before = await _succeeded(stack)
            await wait_for(lambda: _at_least(_succeeded(stack), done_before + 2), timeout=60)
            out["four"] = _peak(sampler, recovered)
            out["four_reached"] = _peak(sampler, recovered) >= 4

            # It comes back, and a fourth starts. Meanwhile the model holds its chunks, so
            # the jobs do not run out while the two processes start.
            model.open.clear()
            fourth = stack._service("transcriber-4", "transcriber")
            stack.transcribers.append(fourth)
            grown = _wall(loop, loop.time())
            await stack.restart(victim)
            await stack.restart(fourth)
            await wait_for(lambda: _in_flight_is(stack, 8), timeout=60)
            # Seen by the query above (the sampler may miss a short peak on a busy machine).
            out["eight"] = max(_peak(sampler, grown), 8)
            model.open.set()

            settled = await stack.wait_settled(120)
            out["settled"] = settled is not None
            await sampler.stop()
            out["peak_after_growth"] = _peak(sampler, grown)
            verdict = await verify(stack, quality=False)
            out["verdict"] = verdict.as_dict()
            rows = await stack.query(
                "SELECT count(*) AS n FROM job_events WHERE reason = 'TRIGGER_REFUSED'"
            )
            out["refusal_events"] = rows[0]["n"]
            assert stack.http is not None
            out["refused_at_orchestrator"] = await _metric(
                stack.http,
                stack.orchestrators[0],
                'transcription_triggers_total{outcome="refused"}',
            )
            out["refused_at_transcribers"] = sum(
                [
                    await _metric(stack.http, t, "transcription_worker_triggers_refused_total")
                    for t in stack.transcribers
                ]
            )
            out["status"] = await stack.query(
                "SELECT status, count(*) AS n FROM jobs GROUP BY status"
            )
    finally:
        await sampler.stop()
        await model.stop()
        await db.drop(url)
    return out


def _wall(loop: asyncio.AbstractEventLoop, at: float) -> float:
    """A loop time as the sampler's wall clock."""
    return time.time() - (loop.time() - at)


async def _held_is(model: StandInModel, count: int) -> bool:
    return model.held == count


async def _in_flight_is(stack: Stack, count: int) -> bool:
    return await _in_flight(stack) == count


async def _at_least(value: Any, floor: int) -> bool:
    return bool(await value >= floor)


async def _worker_lost(stack: Stack) -> int:
    rows = await stack.query(
        "SELECT count(*) AS n FROM job_events WHERE reason = 'WORKER_LOST' "
        "AND from_status IN ('TRIGGERED', 'PROCESSING') AND detail LIKE 'lease expired%'"
    )
    return int(rows[0]["n"])


async def _lost_since(stack: Stack, before: int, count: int) -> bool:
    return await _worker_lost(stack) >= before + count


def test_dispatch_follows_the_transcribers_capacity(
    template: db.Template, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = asyncio.run(scenario(template, tmp_path_factory.mktemp("capacity")))
    print(json.dumps({k: v for k, v in out.items() if k != "verdict"}, default=str))
    assert out["six"] == 6, out
    assert out["victim_running"] == 2, out
    assert out["four"] == 4, out
    assert out["eight"] == 8 and out["peak_after_growth"] <= 8, out
    assert out["settled"], out
    verdict = out["verdict"]
    assert verdict["violations"] == {}, verdict["violations"]
    assert {r["status"]: r["n"] for r in out["status"]} == {"SUCCEEDED": JOBS}
    assert (
        out["refusal_events"],
        out["refused_at_orchestrator"],
        out["refused_at_transcribers"],
    ) == (0, 0, 0), out


async def stop_scenario(template: db.Template, workdir: Any) -> dict[str, Any]:
    """What an HPA scale-down does to a pod: SIGTERM, then SIGKILL after the grace."""
    url = await template.fresh("scale_down")
    model = StandInModel(0.5)
    await model.start()
    stack = _three_transcribers("scale-down", url, template, model, workdir)
    finishes, hands_back, stays = stack.transcribers
    finishes.env = {**finishes.env, "SHUTDOWN_GRACE_SECONDS": "60"}
    hands_back.env = {**hands_back.env, "SHUTDOWN_GRACE_SECONDS": "1"}
    out: dict[str, Any] = {}
    try:
        async with stack:
            model.open.clear()  # every job holds its slot until the model lets it go
            await stack.stream(
                plan_jobs(STOP_JOBS, template.tenants, jfk_every=0), over_seconds=0.5
            )
            await wait_for(lambda: _in_flight_is(stack, 6), timeout=60)

            # One told to stop with time to finish: it takes nothing more, finishes. (Its
            # row may lag its second start on a busy machine: wait for it to say two.)
            await wait_for(lambda: _running_is(stack, finishes, 2), timeout=60)
            out["finishes_running"] = await _running(stack, finishes)
            stopping = asyncio.create_task(asyncio.to_thread(finishes.stop, 90))
            await wait_for(lambda: _accepting_is(stack, finishes, False), timeout=30)
            model.open.set()
            await stopping
            out["finished_in_place"] = await _handed_back(stack) == 0

            # One told to stop while its jobs cannot finish in the grace: handed back.
            model.open.clear()
            # Both its jobs held at the model (each job has one chunk: when the chunks
            # held are all the jobs the two replicas run, none of them can end now).
            await wait_for(lambda: _all_held(stack, model, hands_back, stays), timeout=60)
            out["hands_back_running"] = await _live_running(stack, hands_back)
            await asyncio.to_thread(hands_back.stop, 30)
            out["handed_back"] = await _handed_back(stack)
            model.open.set()

            out["settled"] = await stack.wait_settled(120) is not None
            verdict = await verify(stack, quality=False)
            out["violations"] = verdict.as_dict()["violations"]
            out["attempts"] = [
                r["attempts"] for r in await stack.query("SELECT attempts FROM jobs")
            ]
            out["status"] = {
                r["status"]: r["n"]
                for r in await stack.query("SELECT status, count(*) AS n FROM jobs GROUP BY 1")
            }
            rows = await stack.query(
                "SELECT count(*) AS n FROM job_events WHERE reason = 'TRIGGER_REFUSED'"
            )
            out["refusal_events"] = rows[0]["n"]
            out["rows_left"] = [
                r["url"] for r in await stack.query("SELECT url FROM transcriber_replicas")
            ]
            out["stays"] = stays.url
    finally:
        model.open.set()
        await model.stop()
        await db.drop(url)
    return out


#: Enough that jobs still wait after the first replica's stop, when the second's two
#: are held.
STOP_JOBS = 24


async def _live_running(stack: Stack, service: Service) -> int:
    """What the replica itself says it runs (its row may lag)."""
    assert stack.http is not None
    answer = await stack.http.get(service.url + "/v1/capacity")
    return int(answer.json()["jobs"]["running"])


async def _all_held(stack: Stack, model: StandInModel, replica: Service, other: Service) -> bool:
    running = await _live_running(stack, replica)
    return running == 2 and model.held == running + await _live_running(stack, other)


async def _row(stack: Stack, service: Service) -> asyncpg.Record | None:
    rows = await stack.query(
        "SELECT running, accepting FROM transcriber_replicas WHERE url = $1", service.url
    )
    return rows[0] if rows else None


async def _running(stack: Stack, service: Service) -> int:
    row = await _row(stack, service)
    return -1 if row is None else int(row["running"])


async def _running_is(stack: Stack, service: Service, count: int) -> bool:
    return await _running(stack, service) == count


async def _accepting_is(stack: Stack, service: Service, accepting: bool) -> bool:
    row = await _row(stack, service)
    return row is not None and row["accepting"] is accepting


async def _handed_back(stack: Stack) -> int:
    rows = await stack.query(
        "SELECT count(*) AS n FROM job_events WHERE reason = 'WORKER_LOST' "
        "AND detail LIKE '%shut down%'"
    )
    return int(rows[0]["n"])


def test_a_replica_told_to_stop_finishes_or_hands_back_its_jobs(
    template: db.Template, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Scale-down loses nothing: a stopping replica reports at once that it takes no
    more work; its jobs finish within SHUTDOWN_GRACE_SECONDS or go back to the queue,
    their attempt not counted, and other replicas finish them."""
    out = asyncio.run(stop_scenario(template, tmp_path_factory.mktemp("scale-down")))
    print(json.dumps(out, default=str))
    assert out["finishes_running"] == 2 and out["finished_in_place"], out
    # Both handed back: the drain waits for the hand-backs' writes (it did not, and the
    # process could exit with one cut off: the job then waited out its lease).
    assert out["hands_back_running"] == 2 and out["handed_back"] == 2, out
    assert out["settled"] and out["violations"] == {}, out
    assert out["status"] == {"SUCCEEDED": STOP_JOBS}, out
    # A hand-back takes its attempt back; a recovered lease counts it.
    assert set(out["attempts"]) == {1}, out
    assert out["refusal_events"] == 0, out
    assert out["rows_left"] == [out["stays"]], out  # a stopped replica removes its row
