"""The pipeline's own ceiling: the highest job rate the whole service holds when the model
costs nothing.

    .venv/bin/python -m bench ceiling                        # ramp, then 10 min at the best
    .venv/bin/python -m bench ceiling --rate 20 --minutes 3  # no ramp: 3 min at 20 jobs/s
    .venv/bin/python -m bench ceiling --rate 3 --minutes 2 --profile  # py-spy on each service

The enqueue API, the orchestrator and one transcriber run as processes (``transcription
serve ...``) on a scratch PostgreSQL database. **The model server is replaced** by
:class:`StandInModel`, a loopback server in this benchmark that is not a model: it
answers every chunk after ``--model-delay-ms`` (0: at once) with one segment of text
"stand-in". So what is measured is everything but the model: the API's insert, the
orchestrator's claim and trigger, the transcriber's download, decode, voice activity
detection, chunk request, chunk save, transcript write and webhook delivery, and
PostgreSQL under all of them. The media is tiny (``--media-seconds``, 2 s of jfk.flac as
FLAC, one chunk), served by the kit's media server; the kit's webhook receiver records
and verifies every delivery. Media server, receiver and stand-in run in one thread of this
process; the jobs are sent by ``bench.loadgen`` (one process, open loop, paced).

Phases, on the same services:

1. **warm-up**: a few jobs, delivered;
2. **idle baseline** (``--idle-seconds``, 30): CPU of each service with no jobs (rounds,
   heartbeats), the same-run baseline under each step's per-job CPU;
3. **ramp**: open-loop steps of ``--step-seconds`` (60) at each of ``--rates`` jobs/s,
   each drained before the next. A step *holds* when every POST was accepted (202) and,
   when its last job was due, at most five seconds' worth of its jobs (at least 2) were
   not yet delivered. The ramp stops at the first step that does not hold; the highest
   step that held is the ceiling found;
4. **the hold**: ``--rate`` (``best``: that step) for ``--minutes`` (10), judged the same
   way, and also by the backlog's trend: it must grow by less than 5 % of the rate over
   the hold's last two thirds (least squares over a sample every 5 s); then drained.

Measured, per phase: jobs sent, accepted, delivered within the window, the backlog
(jobs due minus jobs delivered) when the last was due and its trend over the phase; the
latency of a job from its row's ``created_at`` to its webhook's arrival, and the enqueue
latency from the scheduled instant; CPU seconds per job (from the phase's first job sent
to its last delivered) of each service process, of this database's PostgreSQL backends
(read every second: :class:`BackendCpu`), of the benchmark's own process (load generator, peers,
stand-in) and of the rest of the machine (``other``); every second, jobs by status and
the connections to the database by service and state (``pg_stat_activity``). At the end
every job must be SUCCEEDED and delivered exactly once with a valid signature.

``--profile`` samples each service with py-spy during the hold (``bench.pyspy``).
Results: ``bench/results/ceiling-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench import loadgen, measure, report, stack
from bench.database import database_name, sample_every_second, scratch_database
from bench.speech import SAMPLE_RATE, write_audio
from testkit.data import DATA
from testkit.machine import loadavg
from testkit.rawhttp import HttpServer, Request, write_response
from transcription_core.db import asyncpg_dsn

#: The options of the smallest run (``python -m bench --smoke``): about a minute.
SMOKE = ["--rates", "2,4", "--step-seconds", "15", "--minutes", "0.5", "--idle-seconds", "5"]

#: The services this benchmark runs (the model server is the stand-in).
SERVICES = ("enqueue", "orchestrator", "transcriber")
MEDIA = "tiny.flac"
STAND_IN_MODEL = "stand-in (bench/scenarios/ceiling.py: not a model)"
SETTINGS = {
    "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "32",
    "WORKER_MAX_JOBS": "32",
    "CHUNK_CONCURRENCY": "4",
}
TERMINAL = ("SUCCEEDED", "PERMAFAILED", "CANCELED")


class StandInModel(HttpServer):
    """Not a model: answers ``POST /v1/predict`` after ``delay`` seconds with one segment
    ("stand-in") as long as the chunk; anything else (health) 200."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.chunks = 0

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if request.path.startswith("/v1/predict"):
            self.chunks += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            seconds = round(len(request.body) / (2 * SAMPLE_RATE), 3)
            body: dict[str, Any] = {
                "segments": [{"start": 0.0, "end": seconds, "text": " stand-in"}],
                "language": "en",
                "language_probability": 1.0,
                "duration": seconds,
                "model": STAND_IN_MODEL,
            }
        else:
            body = {"status": "ok"}
        await write_response(
            writer, 200, json.dumps(body).encode(), {"content-type": "application/json"}
        )
        return True


def make_media(folder: Path, seconds: float) -> Path:
    from faster_whisper import decode_audio

    speech = decode_audio(str(DATA / "jfk.flac")).astype(np.float32)
    return write_audio(speech[: int(seconds * SAMPLE_RATE)], folder / MEDIA)


class BackendCpu:
    """CPU seconds of this database's PostgreSQL backends, read every second, so that a
    backend that exits within a phase (the pools recycle connections every 300 s, and
    close those opened beyond their size) still counts up to its last reading:
    :class:`measure.CpuMeter` sees only the processes alive at its ends."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.readings: dict[int, list[tuple[float, float]]] = {}

    def read(self) -> None:
        now = time.monotonic()
        for pid, (comm, seconds) in measure._proc_cpu().items():
            if comm == "postgres" and (
                pid in self.readings or f" {self.database} " in measure._cmdline(pid)
            ):
                self.readings.setdefault(pid, []).append((now, seconds))

    def between(self, start: float, end: float) -> float:
        """CPU seconds used between two monotonic instants (to the readings around them)."""
        total = 0.0
        for readings in self.readings.values():
            before = [s for t, s in readings if t <= start]
            upto = [s for t, s in readings if t <= end]
            if upto:
                total += upto[-1] - (before[-1] if before else 0.0)
        return total


@dataclass
class Run:
    services: stack.Services
    peers: stack.Peers
    request: bytes
    t0: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    backends: BackendCpu | None = None

    def delivered_ids(self) -> set[str]:
        return {r.job_id for r in list(self.peers.receiver.deliveries) if r.job_id}


async def sample(run: Run, stop: asyncio.Event) -> None:
    """Every second: jobs by status, deliveries, and the database's connections by
    application and state (this sampler's own left out); reconnecting when it must."""

    async def read_backends() -> None:
        if run.backends is not None:
            await asyncio.to_thread(run.backends.read)

    async def read(conn: asyncpg.Connection) -> dict[str, Any]:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        activity = await conn.fetch(
            "SELECT coalesce(nullif(application_name, ''), '?') AS app, "
            "coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "GROUP BY 1, 2"
        )
        return {
            "counts": {r["status"]: r["n"] for r in rows},
            "delivered": len(run.peers.receiver.deliveries),
            "connections": {f"{r['app']}/{r['state']}": r["n"] for r in activity},
            "load1": float(loadavg().split()[0]),
        }

    await sample_every_second(
        run.services.database_url, stop, run.t0, run.samples, read, before=read_backends
    )


def connections(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Connections to the database over ``samples``: open and in use (not idle), most and
    mean, in all and by application."""
    rows = [s["connections"] for s in samples if "connections" in s]
    if not rows:
        return {}

    def series(keep: Any) -> list[int]:
        return [sum(n for k, n in row.items() if keep(k)) for row in rows]

    apps = sorted({k.split("/")[0] for row in rows for k in row})
    out: dict[str, Any] = {}
    for label, keep_app in [("all", lambda a: True), *[(a, a.__eq__) for a in apps]]:
        opened = series(lambda k, f=keep_app: f(k.split("/")[0]))
        busy = series(lambda k, f=keep_app: f(k.split("/")[0]) and not k.endswith("/idle"))
        out[label] = {
            "open_max": max(opened),
            "open_mean": round(sum(opened) / len(opened), 1),
            "in_use_max": max(busy),
            "in_use_mean": round(sum(busy) / len(busy), 2),
        }
    return out


async def wait_drained(run: Run, timeout: float) -> bool:
    """Until every accepted job has been delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(run.delivered_ids()) >= run.accepted:
            return True
        await asyncio.sleep(0.5)
    return False


def fix_postgres(cpu: dict[str, Any], seconds: float) -> None:
    """Put ``seconds`` (:class:`BackendCpu`) in place of the meter's figure for this
    database's backends; what the meter had called ``other`` gives way to it."""
    grew = max(seconds - cpu["cpu_seconds"]["postgres"], 0.0)
    cpu["cpu_seconds"]["postgres"] = round(seconds, 2)
    cpu["cpu_seconds"]["other"] = round(max(cpu["cpu_seconds"]["other"] - grew, 0.0), 2)
    wall = cpu["wall_seconds"]
    cpu["cores_busy"] = {k: round(v / wall, 2) for k, v in cpu["cpu_seconds"].items()}


def pids(run: Run) -> dict[str, set[int]]:
    return {name: run.services.servers[name].pids() for name in SERVICES}


async def idle(run: Run, seconds: float) -> dict[str, Any]:
    report.log(f"idle baseline: {seconds:g} s with no jobs")
    meter = measure.CpuMeter(pids(run), database_name(run.services.database_url))
    meter.start()
    await asyncio.sleep(seconds)
    return meter.stop()


#: A phase holds when every POST was accepted and the jobs due but not delivered (the
#: backlog: queued, in flight, or being delivered) end at most this many seconds' worth
#: (at least 2): the mean job spent no longer than that in the pipeline ...
BACKLOG_SECONDS = 5.0
#: ... and, in the hold (long enough for a trend to stand out of the noise: a 60-s step's
#: backlog wanders by more than 5 % of its rate), the backlog grew by no more than this
#: share of the rate over its last two thirds (least squares): deliveries kept up with at
#: least 95 % of the arrivals.
MAX_GROWTH = 0.05


def backlog_limit(rate: float) -> float:
    return max(2.0, BACKLOG_SECONDS * rate)


def held(rate: float, sent: int, accepted: int, backlog: int, growth_per_s: float | None) -> bool:
    """Every POST accepted, the backlog small and (``growth_per_s`` given) not growing."""
    growing = growth_per_s is not None and growth_per_s > MAX_GROWTH * rate
    return accepted == sent and backlog <= backlog_limit(rate) and not growing


async def phase(run: Run, name: str, rate: float, seconds: float, drain: float) -> dict[str, Any]:
    """``rate`` jobs/s for ``seconds``, open loop, then drained; what it did."""
    report.log(f"{name}: {rate:g} jobs/s for {seconds:g} s (load {loadavg()})")
    delivered_before = run.delivered_ids()
    meter = measure.CpuMeter(pids(run), database_name(run.services.database_url))
    plan = {
        "host": "127.0.0.1",
        "port": int(run.services.api_url.rsplit(":", 1)[1]),
        "request": run.request,
        "rate": rate,
        "duration": seconds,
        "processes": 1,
    }
    wall0 = time.time()
    assert run.backends is not None
    run.backends.read()
    mono0 = time.monotonic()
    meter.start()
    records = await asyncio.to_thread(loadgen.run_paced, plan)
    cpu_window = meter.stop()  # while jobs were sent
    statuses = Counter(str(status) for *_, status in records)
    accepted = statuses.get("202", 0)
    run.accepted += accepted
    first = min(r[0] for r in records)
    due_end = max(r[0] for r in records)
    arrivals = [
        r
        for r in list(run.peers.receiver.deliveries)
        if r.job_id and r.job_id not in delivered_before and r.at_monotonic >= first
    ]
    by_end = len({r.job_id for r in arrivals if r.at_monotonic <= due_end})
    due = sum(1 for r in records if r[0] <= due_end)
    drained = await wait_drained(run, drain)
    cpu = meter.stop()  # from the first job sent to the last delivered: every job's cost
    run.backends.read()
    fix_postgres(cpu, run.backends.between(mono0, time.monotonic()))
    samples = [s for s in run.samples if first - run.t0 <= s["t"] <= due_end - run.t0]
    backlog = backlog_series(run, records, arrivals, first, due_end)
    jobs = accepted or 1
    result = {
        "name": name,
        "rate": rate,
        "seconds": seconds,
        "window_wall": [wall0, time.time()],
        "sent": len(records),
        "statuses": dict(statuses),
        "accepted": accepted,
        "delivered_by_last_due": by_end,
        "backlog_at_last_due": due - by_end,
        "backlog": backlog,
        "drained": drained,
        "enqueue_latency": measure.summarise_ms([r[2] - r[0] for r in records if r[3]]),
        "cpu_while_sending": cpu_window,
        "cpu": cpu,
        "cpu_ms_per_job": {k: round(v * 1000 / jobs, 2) for k, v in cpu["cpu_seconds"].items()},
        "connections": connections(samples),
        "loadavg_at_end": loadavg(),
    }
    result["held"] = held(
        rate,
        len(records),
        accepted,
        result["backlog_at_last_due"],
        backlog["trend_jobs_per_minute"] / 60 if name == "hold" else None,
    )
    report.log(
        f"  accepted {accepted}/{len(records)}, not delivered when the last was due "
        f"{result['backlog_at_last_due']}, busy cores {cpu_window['cores_busy']} → "
        f"{'held' if result['held'] else 'NOT held'} (load {loadavg()})"
    )
    return result


def backlog_series(
    run: Run, records: list[loadgen.Record], arrivals: list[Any], first: float, last: float
) -> dict[str, Any]:
    """Jobs due minus jobs delivered every 5 s of the window, and the least-squares trend
    of that over the window's last two thirds (the first fills the pipeline)."""
    due = sorted(r[0] for r in records)
    done = sorted(r.at_monotonic for r in arrivals)
    instants = [*np.arange(first + 5.0, last, 5.0), last]
    points = [
        (
            round(t - first, 1),
            int(np.searchsorted(due, t, "right") - np.searchsorted(done, t, "right")),
        )
        for t in instants
    ]
    later = [(x, y) for x, y in points if x >= (last - first) / 3]
    slope = 0.0
    if len(later) >= 3:
        slope = float(np.polyfit([x for x, _ in later], [y for _, y in later], 1)[0]) * 60
    return {"every_5_s": points, "trend_jobs_per_minute": round(slope, 2)}


async def final_checks(run: Run) -> dict[str, Any]:
    """Every job SUCCEEDED on its first attempt, delivered once, signed; the latency of
    every job from its row to its webhook."""
    conn = await asyncpg.connect(asyncpg_dsn(run.services.database_url))
    try:
        jobs = await conn.fetch(
            "SELECT id, status, attempts, created_at, webhook_message_id FROM jobs"
        )
    finally:
        await conn.close()
    received = list(run.peers.receiver.deliveries)
    per_job = Counter(r.job_id for r in received)
    per_webhook_id = Counter(r.webhook_id for r in received)
    ids = {row["id"] for row in jobs}
    message_ids = {row["id"]: row["webhook_message_id"] for row in jobs}
    return {
        "jobs": len(jobs),
        "accepted": run.accepted,
        "statuses": dict(Counter(row["status"] for row in jobs)),
        "attempts": dict(Counter(row["attempts"] for row in jobs)),
        "all_succeeded": all(row["status"] == "SUCCEEDED" for row in jobs)
        and len(jobs) == run.accepted,
        "deliveries": len(received),
        "jobs_delivered": sum(1 for i in ids if per_job.get(i)),
        "jobs_delivered_more_than_once": sum(1 for i in ids if per_job.get(i, 0) > 1),
        "duplicate_webhook_ids": sum(1 for n in per_webhook_id.values() if n > 1),
        "deliveries_for_unknown_jobs": sum(1 for r in received if r.job_id not in ids),
        "bad_signatures": sum(1 for r in received if not r.signature_ok),
        "webhook_id_is_the_jobs": sum(
            1 for r in received if message_ids.get(r.job_id or "") == r.webhook_id
        ),
        "_created": {row["id"]: row["created_at"].timestamp() for row in jobs},
    }


def latencies(checks: dict[str, Any], run: Run, window: list[float]) -> dict[str, float]:
    """Row created → first webhook arrival (both wall clocks of this machine), for the
    jobs created in ``window`` (wall)."""
    created = checks["_created"]
    first: dict[str, float] = {}
    for r in list(run.peers.receiver.deliveries):
        if r.job_id and r.job_id not in first:
            first[r.job_id] = r.at
    return measure.summarise_ms(
        [first[i] - t for i, t in created.items() if window[0] <= t <= window[1] and i in first]
    )


@contextlib.contextmanager
def profiled(run: Run, out: Path | None, seconds: float) -> Any:
    """py-spy on each service for ``seconds`` (nothing without ``out``)."""
    if out is None:
        yield
        return
    from bench import pyspy

    with contextlib.ExitStack() as stack_:
        for name in SERVICES:
            stack_.enter_context(
                pyspy.record(run.services.pid(name), out / f"{name}.txt", seconds, rate=50)
            )
        yield


#: What a service's CPU goes to, by a frame on the sample's stack (inclusive: a sample
#: counts for every line whose pattern one of its frames matches). The event loop's own
#: native time (``Runner.run`` innermost: uvloop's socket work, and some of its waiting,
#: which py-spy's --nonblocking mode cannot always tell apart) is in the top frames.
STAGES: tuple[tuple[str, str], ...] = (
    ("database, client side (asyncpg + SQLAlchemy)", r"\((asyncpg|sqlalchemy)/"),
    ("  of which SQLAlchemy (statements, pool, results)", r"\(sqlalchemy/"),
    ("HTTP client: httpx / httpcore", r"\((httpx|httpcore|h11)/"),
    ("HTTP server, per request", r"^(RequestResponseCycle|HttpToolsProtocol|H11Protocol)\."),
    ("pydantic (validation, JSON)", r"\(pydantic"),
    ("prometheus_client", r"\(prometheus_client/"),
    ("voice activity detection (onnxruntime)", r"\(onnxruntime/|_SileroStream|^analyse_pcm "),
    ("decode (PyAV)", r"^decode_to_pcm_file |\(av/"),
)


def profile_summary(folder: Path) -> dict[str, Any]:
    from bench import pyspy

    return {
        name: pyspy.summarise(folder / f"{name}.txt", stages=STAGES)
        for name in SERVICES
        if (folder / f"{name}.txt").is_file()
    }


async def bench(args: argparse.Namespace, url: str, media_folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"steps": []}
    model = StandInModel(args.model_delay_ms / 1000)
    settings = {**SETTINGS, **dict(item.split("=", 1) for item in args.set)}
    env = {name: dict(settings) for name in SERVICES}
    log_dir = report.TMP / "ceiling-logs"
    with stack.Peers(media_folder, model) as peers:
        with stack.running_services(url, env, log_dir, model_server_url=model.url) as services:
            hook = peers.hook_url(services)
            body = {"media_url": peers.media_url(MEDIA), "webhook_url": hook, "language": "en"}
            port = int(services.api_url.rsplit(":", 1)[1])
            request = loadgen.http_request(
                "POST",
                "127.0.0.1",
                port,
                "/v1/jobs",
                {"Authorization": f"Bearer {services.api_key}", "Content-Type": "application/json"},
                json.dumps(body).encode(),
            )
            run = Run(services, peers, request, backends=BackendCpu(database_name(url)))
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(run, stop))
            orchestrator_before = stack.metrics(services.url("orchestrator"))
            try:
                result["warm_up"] = await phase(run, "warm-up", 2.0, 3.0, 120)
                result["idle"] = await idle(run, args.idle_seconds)
                result["idle"]["connections"] = connections(run.samples[-int(args.idle_seconds) :])
                ramp = args.rate == "best" or args.ramp
                for rate in [float(r) for r in args.rates.split(",") if r] if ramp else []:
                    step = await phase(run, f"step {rate:g}/s", rate, args.step_seconds, 600)
                    result["steps"].append(step)
                    if not step["held"]:
                        break
                held = [s["rate"] for s in result["steps"] if s["held"]]
                result["best_step_rate"] = max(held, default=None)
                rate = float(args.rate) if args.rate != "best" else result["best_step_rate"]
                if rate and args.minutes > 0:
                    seconds = args.minutes * 60
                    prof = report.TMP / "ceiling-profile" if args.profile else None
                    with profiled(run, prof, seconds):
                        result["hold"] = await phase(
                            run, "hold", rate, seconds, args.drain_minutes * 60
                        )
                    if prof is not None:
                        result["profile"] = profile_summary(prof)
            finally:
                await asyncio.sleep(1.5)
                stop.set()
                await sampler
            result["orchestrator_metrics_delta"] = {
                k: v
                for k, v in stack.metrics_delta(
                    orchestrator_before, stack.metrics(services.url("orchestrator"))
                ).items()
                if v and k.startswith("transcription_") and "_bucket" not in k
            }
            result["stand_in_chunks"] = model.chunks
            checks = await final_checks(run)
            for p in [result["warm_up"], *result["steps"], result.get("hold")]:
                if p:
                    p["latency_created_to_webhook"] = latencies(checks, run, p["window_wall"])
            checks.pop("_created")
            result["checks"] = checks
            result["samples"] = run.samples
            result["settings"] = settings
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="5,10,15,20,25,30,35,40", help="the ramp's steps, jobs/s"
    )
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument(
        "--rate", default="best", help="the hold's jobs/s, or 'best': the ramp's highest held step"
    )
    parser.add_argument("--ramp", action="store_true", help="ramp even when --rate is a number")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the hold")
    parser.add_argument("--drain-minutes", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--media-seconds", type=float, default=2.0)
    parser.add_argument("--model-delay-ms", type=float, default=0.0)
    parser.add_argument("--profile", action="store_true", help="py-spy on each service in the hold")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--name", default="ceiling", help="result file name prefix")
    parser.add_argument("--report-only", type=Path, help="write the .md again from a results JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        write_report(json.loads(args.report_only.read_text()), args.out, args.name)
        return
    args.set = [
        f"{k.strip().upper()}={v.strip()}" for k, _, v in (s.partition("=") for s in args.set)
    ]
    info = report.machine()
    report.log(f"load {loadavg()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp, scratch_database("bench_ceiling") as url:
        make_media(Path(tmp), args.media_seconds)
        result = asyncio.run(bench(args, url, Path(tmp)))
    result.update(
        {
            "machine": info,
            "loadavg_at_end": loadavg(),
            "args": {k: v for k, v in vars(args).items() if k != "out"},
        }
    )
    write_report(result, args.out, args.name)


#: Columns of the CPU table: CpuMeter's groups, as the report names them.
CPU_COLUMNS = {
    "enqueue": "enqueue",
    "orchestrator": "orchestrator",
    "transcriber": "transcriber",
    "postgres": "PostgreSQL (this database)",
    "postgres (shared)": "PostgreSQL, the rest (WAL writer, checkpointer, other databases)",
    "load generator": "benchmark process",
    "other": "other processes",
}


def _phases(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [*result["steps"], *([result["hold"]] if "hold" in result else [])]


#: Not counted as this benchmark's: the rest of the machine, and PostgreSQL's processes
#: other than this database's backends (its WAL writer and checkpointer, but also the
#: backends of other databases: other people's tests on a shared machine).
NOT_OURS = ("other", "postgres (shared)")


def ours_ms_per_job(p: dict[str, Any]) -> float:
    """CPU ms per job of what this benchmark runs: the services, this database's
    PostgreSQL backends, the load generator, peers and stand-in."""
    return sum(v for k, v in p["cpu_ms_per_job"].items() if k not in NOT_OURS)


def write_report(result: dict[str, Any], out: Path, name: str) -> None:
    info = result["machine"]
    checks = result["checks"]
    phases = _phases(result)
    hold = result.get("hold")
    ceiling = hold["rate"] if hold and hold["held"] else result.get("best_step_rate")
    held_text = f"held for {hold['seconds'] / 60:g} min" if hold and hold["held"] else "a ramp step"
    if hold and not hold["held"]:
        held_text = f"a ramp step; the hold at {hold['rate']:g}/s did NOT hold"
    idle_cores = result["idle"]["cores_busy"]
    once = (
        checks["jobs_delivered"] == checks["jobs"] and not checks["jobs_delivered_more_than_once"]
    )
    lines = [
        "# The pipeline's ceiling: the whole service with a stand-in model",
        "",
        f"**Ceiling found: {ceiling if ceiling is not None else 'none'} jobs/s** ({held_text}); "
        f"target ≥ 20 jobs/s: **{report.met(bool(ceiling and ceiling >= 20))}**. "
        f"Every job SUCCEEDED: {checks['all_succeeded']}; delivered exactly once: "
        f"{once}.",
        "",
        f"Enqueue API, orchestrator and one transcriber as processes on PostgreSQL; the model "
        f"server replaced by a stand-in that answers each chunk after "
        f"{result['args']['model_delay_ms']:g} ms; media {result['args']['media_seconds']:g} s "
        f"of speech (FLAC, one chunk) from the loopback media server; a loopback webhook "
        f"receiver; jobs sent open loop by bench/loadgen.py. Settings: "
        f"{', '.join(f'{k}={v}' for k, v in result['settings'].items())} (others default). "
        f"A phase *holds* when every POST got 202 and at most {BACKLOG_SECONDS:g} seconds' "
        "worth of its jobs were undelivered when its last job was due; the hold also when "
        f"that backlog grew by less than {MAX_GROWTH:.0%} of the rate over its last two "
        "thirds (the trend column).",
        "",
        "| phase | jobs/s | sent | 202 | undelivered at last due | backlog trend /min "
        "| created → webhook p50 / p99 ms | enqueue p99 ms | held | others' cores "
        "| load at end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for p in phases:
        lat = p.get("latency_created_to_webhook", {})
        lines.append(
            f"| {p['name']} | {p['rate']:g} | {p['sent']} | {p['accepted']} | "
            f"{p['backlog_at_last_due']} | {p['backlog']['trend_jobs_per_minute']:+.1f} | "
            f"{lat.get('p50_ms', 0):.0f} / {lat.get('p99_ms', 0):.0f} | "
            f"{p['enqueue_latency'].get('p99_ms', 0):.0f} | {'yes' if p['held'] else 'NO'} | "
            f"{p['cpu_while_sending']['cores_busy'].get('other', 0):.2f} | "
            f"{p['loadavg_at_end']} |"
        )
    lines += [
        "",
        "**CPU milliseconds per job** (CPU seconds from the phase's first job sent to its "
        "last delivered, over its jobs; in parentheses for the services: net of the idle "
        "baseline)",
        "",
        "| phase | "
        + " | ".join(CPU_COLUMNS.values())
        + " | ours (the services, this database, the benchmark) "
        f"| jobs/s that allows on {info['nproc']} free cores |",
        "| --- | " + " | ".join("---:" for _ in CPU_COLUMNS) + " | ---: | ---: |",
    ]
    for p in phases:
        cells = []
        for key in CPU_COLUMNS:
            ms = p["cpu_ms_per_job"].get(key, 0.0)
            if key in SERVICES:
                net = ms - idle_cores.get(key, 0.0) * p["cpu"]["wall_seconds"] * 1000 / max(
                    p["accepted"], 1
                )
                cells.append(f"{ms:.1f} ({net:.1f})")
            else:
                cells.append(f"{ms:.1f}")
        ours = ours_ms_per_job(p)
        lines.append(
            f"| {p['name']} | {' | '.join(cells)} | {ours:.1f} | "
            f"{info['nproc'] * 1000 / ours if ours else 0:.1f} |"
        )
    lines += [
        "",
        f"Idle baseline ({result['idle']['wall_seconds']:g} s, no jobs), cores busy: {idle_cores}.",
        "",
        "**Database connections** (`pg_stat_activity` of the scratch database every second; "
        "in use = not idle):",
        "",
        "| phase | application | open, most | open, mean | in use, most | in use, mean |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for p in [result["idle"] | {"name": "idle"}, *phases]:
        for app, c in p.get("connections", {}).items():
            lines.append(
                f"| {p['name']} | {app} | {c['open_max']} | {c['open_mean']} | "
                f"{c['in_use_max']} | {c['in_use_mean']} |"
            )
    if hold:
        lines += [
            "",
            f"**The hold** ({hold['rate']:g} jobs/s): jobs due minus delivered every 30 s: "
            + ", ".join(str(n) for x, n in hold["backlog"]["every_5_s"] if x % 30 == 0),
        ]
    lines += [
        "",
        "**Checks**: "
        f"jobs {checks['jobs']} (accepted {checks['accepted']}), statuses {checks['statuses']}, "
        f"attempts {checks['attempts']}; deliveries {checks['deliveries']}, jobs delivered "
        f"{checks['jobs_delivered']}, delivered more than once "
        f"{checks['jobs_delivered_more_than_once']}, duplicate webhook-ids "
        f"{checks['duplicate_webhook_ids']}, bad signatures {checks['bad_signatures']}, "
        f"webhook-id the job's own {checks['webhook_id_is_the_jobs']}; stand-in chunks "
        f"{result['stand_in_chunks']}; orchestrator {result['orchestrator_metrics_delta']}.",
        "",
        *report.machine_section(info, [p["cpu_while_sending"] for p in phases]),
        f"- load average at the end: {result['loadavg_at_end']}",
    ]
    for service, prof in result.get("profile", {}).items():
        lines += ["", f"### py-spy: {service} ({prof['busy_samples']} busy samples)", ""]
        lines += ["| stage (inclusive) | % |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in prof["stages_inclusive_percent"].items()]
        lines += ["", "| package (self) | % |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in prof["self_by_package_percent"].items()]
        lines += ["", "| frame (self) | % |", "| --- | ---: |"]
        lines += [f"| `{k}` | {v} |" for k, v in prof["top_self_frames_percent"].items()]
    summary = "\n".join(lines)
    print(summary)
    report.write(out, name, result, summary)
