"""Enqueue throughput and latency: ``POST /v1/jobs`` over real HTTP on real PostgreSQL.

Run: ``.venv/bin/python -m bench enqueue [--duration 20] [--connections 32]
[--workers 1,2] [--rate 500] [--out bench/results] [--profile]``

On a fresh scratch database (``bench_<random>``, migrated, dropped at the end) with one
tenant, it measures, in one run:

1. the database alone, through asyncpg from ``--connections`` connections, in
   interleaved slices: the raw insert rate (single-row ``INSERT``s, autocommit, into
   ``raw_jobs``, a copy of ``jobs`` with the same columns and indexes, without the
   foreign key); the enqueue as the service issues it (``repository.insert_job_asyncpg``:
   the job and its event in one statement, autocommit); and the same with a NOTIFY in
   its transaction, as the former per-row INSERT trigger did, for reference;
2. enqueue throughput with wrk (closed loop, ``--connections`` keep-alive connections,
   ``bench/scenarios/enqueue_post.lua``) against the service started as a real server process, once
   per worker count in ``--workers``; responses counted by status, and the jobs in the
   database checked against the 202s;
3. latency at a fixed ``--rate`` (default 500/s) with the paced open-loop generator in
   ``bench.loadgen``, on the worker count that had the best throughput;
4. with ``--profile``, one more wrk run with py-spy sampling the server, summarised by
   where the time goes (see ``bench.pyspy``).

Results: ``<out>/enqueue-<date>.json`` and ``.md``. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import loadgen, measure, pyspy, report
from bench.database import database_name, scratch_database
from testkit.ports import free_port
from testkit.procs import Service, serve_argv
from transcription_core import repository as repo
from transcription_core.db import asyncpg_dsn, create_engine

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = [
    "--duration",
    "2",
    "--warmup",
    "1",
    "--connections",
    "4",
    "--workers",
    "1",
    "--rate",
    "50",
    "--raw-seconds",
    "1",
    "--quiet-wait",
    "0",
]


LUA = Path(__file__).resolve().parent / "enqueue_post.lua"
TENANT = "org-bench"
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0

JOB_COLUMNS = (
    "id, tenant, status, attempts, deliveries, external_id, media_url, webhook_url, "
    "language, metadata, idempotency_key, request_hash, due_at, created_at, updated_at"
)
JOB_VALUES = "$1, $2, 'QUEUED', 0, 0, $3, $4, $5, $6, $7::jsonb, NULL, NULL, $8, $8, $8"


log = report.log
JOB_BODY = {
    "media_url": "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc",
    "webhook_url": "https://api.example.com/hooks/transcripts",
    "external_id": "post-123",
    "language": "en",
    "metadata": {"creator": 42},
}


# --- 1. the database alone ------------------------------------------------------------


def _job_args(now: datetime) -> tuple[Any, ...]:
    body = JOB_BODY
    return (
        str(uuid.uuid4()),
        TENANT,
        body["external_id"],
        body["media_url"],
        body["webhook_url"],
        body["language"],
        json.dumps(body["metadata"]),
        now,
    )


async def _hammer(dsn: str, connections: int, seconds: float, work: Any) -> dict[str, Any]:
    """Run ``work(conn)`` in a loop on ``connections`` connections for ``seconds``."""
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    done = 0
    deadline = 0.0

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await work(conn)
            done += 1

    try:
        for conn in conns:  # prepare the statements outside the timed window
            await work(conn)
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(loop(c) for c in conns))
        elapsed = time.monotonic() - started
    finally:
        for conn in conns:
            await conn.close()
    return {
        "connections": connections,
        "seconds": round(elapsed, 2),
        "operations": done,
        "per_second": round(done / elapsed, 1),
    }


async def _raw_insert(conn: asyncpg.Connection) -> None:
    sql = f"INSERT INTO raw_jobs ({JOB_COLUMNS}) VALUES ({JOB_VALUES})"
    await conn.execute(sql, *_job_args(datetime.now(UTC)))


NEW_JOB = repo.NewJob(
    tenant=TENANT,
    media_url=JOB_BODY["media_url"],
    webhook_url=JOB_BODY["webhook_url"],
    external_id=JOB_BODY["external_id"],
    language=JOB_BODY["language"],
    metadata=JOB_BODY["metadata"],
)


async def _enqueue_statement(conn: asyncpg.Connection) -> None:
    await repo.insert_job_asyncpg(conn, NEW_JOB)


async def _enqueue_statement_notifying(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await repo.insert_job_asyncpg(conn, NEW_JOB)
        await conn.execute(repo.NOTIFY_SQL)


#: name -> (what it issues, the work)
DATABASE_VARIANTS: dict[str, tuple[str, Any]] = {
    "raw_inserts": (
        "INSERT INTO raw_jobs (15 columns) VALUES (...) -- autocommit, one row",
        _raw_insert,
    ),
    "enqueue_statement": (
        "repository.insert_job_asyncpg: WITH new_job AS (INSERT INTO jobs ...) INSERT INTO "
        "job_events ... -- autocommit, as the service issues it (no NOTIFY)",
        _enqueue_statement,
    ),
    "enqueue_statement_notify_in_txn": (
        "BEGIN; the same statement; NOTIFY transcription_jobs; COMMIT -- what the former "
        "per-row INSERT trigger did",
        _enqueue_statement_notifying,
    ),
}


async def database_alone(
    dsn: str, connections: int, seconds: float, rounds: int = 3
) -> dict[str, Any]:
    """Each variant for ``seconds`` in all, in ``rounds`` interleaved slices, so that a
    change in the machine's other load touches them alike; rates are total operations
    over total time, and each slice's rate is kept."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "CREATE TABLE raw_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING INDEXES)"
        )
    finally:
        await admin.close()
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in DATABASE_VARIANTS}
    for _ in range(rounds):
        for name, (_, work) in DATABASE_VARIANTS.items():
            slices[name].append(await _hammer(dsn, connections, seconds / rounds, work))
    result = {}
    for name, parts in slices.items():
        ops = sum(p["operations"] for p in parts)
        elapsed = sum(p["seconds"] for p in parts)
        result[name] = {
            "statement": DATABASE_VARIANTS[name][0],
            "connections": connections,
            "seconds": round(elapsed, 2),
            "operations": ops,
            "per_second": round(ops / elapsed, 1),
            "slices_per_second": [p["per_second"] for p in parts],
        }
    return result


async def create_tenant(url: str) -> str:
    engine = create_engine(url, "bench-enqueue", 1)
    try:
        async with engine.begin() as conn:
            return (await repo.create_tenant(conn, TENANT)).api_key
    finally:
        await engine.dispose()


# --- 2. the server, and wrk -----------------------------------------------------------


def server_command(workers: int, port: int) -> list[str]:
    """What runs the service: ``transcription serve enqueue`` for one worker (exactly what a
    container runs), uvicorn with ``--workers`` for more."""
    if workers == 1:
        return serve_argv("enqueue", port)
    return [
        str(Path(sys.executable).parent / "uvicorn"),
        "enqueue_service.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_enqueue(url: str, workers: int, log_dir: Path) -> Service:
    env = {"DATABASE_URL": url, "LOG_LEVEL": "WARNING", "ALLOW_PRIVATE_URLS": "false"}
    log = log_dir / f"enqueue-w{workers}.log"
    server = Service(
        "enqueue", "enqueue", free_port(), env, log, argv=lambda port: server_command(workers, port)
    )
    server.start()
    try:
        server.wait_ready_blocking(30)
    except BaseException:
        server.stop(grace=15)
        raise
    if workers > 1:  # the master answers /healthz as soon as one worker is up
        deadline = time.monotonic() + 20
        while len(server.pids()) < workers + 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # + the master and multiprocessing's resource tracker
        time.sleep(1.0)
    return server


def run_wrk(
    server_url: str, api_key: str, seconds: float, connections: int, threads: int
) -> dict[str, Any]:
    env = dict(os.environ, BENCH_API_KEY=api_key, BENCH_BODY=json.dumps(JOB_BODY))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        server_url + "/v1/jobs",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    seconds_run = data["duration_us"] / 1e6
    data["requests_per_second"] = round(data["requests"] / seconds_run, 1)
    data["accepted_202"] = data["statuses"].get("202", 0)
    data["accepted_per_second"] = round(data["accepted_202"] / seconds_run, 1)
    data["non_202"] = data["requests"] - data["accepted_202"]
    data["latency_ms"] = {k: round(v / 1000, 2) for k, v in data.pop("latency_us").items()}
    data["command"] = " ".join([*cmd[:-2], "bench/scenarios/enqueue_post.lua", "<url>/v1/jobs"])
    e = data["errors"]
    data["socket_errors"] = e["connect"] + e["read"] + e["write"] + e["timeout"]
    data["output"] = "\n".join(x for x in out.stdout.splitlines() if not x.startswith("WRK_"))
    return data


_COUNTER_SESSIONS = [0]


async def db_counters(dsn: str) -> dict[str, int]:
    """Jobs in the table, and sessions opened on this database so far (PostgreSQL 14+),
    less the ones this function opened itself."""
    conn = await asyncpg.connect(dsn)
    _COUNTER_SESSIONS[0] += 1
    try:
        jobs = await conn.fetchval("SELECT count(*) FROM jobs")
        sessions = await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return {"jobs": int(jobs), "sessions": int(sessions or 0) - _COUNTER_SESSIONS[0]}


def settled_counters(dsn: str, most_seconds: float = 15.0) -> dict[str, int]:
    """The counters once no job has been added for 0.5 s: requests that wrk abandoned
    when it stopped may still be committing."""
    last = asyncio.run(db_counters(dsn))
    deadline = time.monotonic() + most_seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = asyncio.run(db_counters(dsn))
        if now["jobs"] == last["jobs"]:
            return now
        last = now
    return last


def measure_wrk(
    server: Service, dsn: str, api_key: str, seconds: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, then one measured wrk run with CPU and database accounting."""
    quiet = measure.wait_for_quiet(args.quiet_wait)
    run_wrk(server.url, api_key, args.warmup, args.connections, args.wrk_threads)
    before = settled_counters(dsn)
    meter = measure.CpuMeter({"enqueue server": server.pids()}, database_name(dsn))
    meter.start()
    result = run_wrk(server.url, api_key, seconds, args.connections, args.wrk_threads)
    cpu = meter.stop()
    after = settled_counters(dsn)
    result["cpu"] = cpu
    result["machine_busy_cores_before"] = quiet
    result["cpu_ms_per_request"] = {
        k: round(1000 * v / max(result["requests"], 1), 3)
        for k, v in cpu["cpu_seconds"].items()
        if k in ("enqueue server", "postgres")
    }
    result["server_command"] = " ".join(Path(c).name if "/" in c else c for c in server.command)
    jobs = after["jobs"] - before["jobs"]
    result["jobs_in_db"] = jobs
    # Connections the server opened during the run (less the one that reads the
    # counter): more than a handful means the pool is opening and closing connections.
    result["db_sessions_opened"] = after["sessions"] - before["sessions"]
    # wrk stops with requests in flight: the server may commit them without wrk counting
    # the 202, so the database may hold up to one job per connection more than wrk saw.
    result["db_check"] = {
        "jobs_minus_202": jobs - result["accepted_202"],
        "ok": 0 <= jobs - result["accepted_202"] <= args.connections,
    }
    return result


def throughput(
    url: str, dsn: str, api_key: str, workers: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    server = start_enqueue(url, workers, log_dir)
    try:
        result = measure_wrk(server, dsn, api_key, args.duration, args)
    finally:
        server.stop(grace=15)
    result["workers"] = workers
    return result


# --- 3. fixed rate --------------------------------------------------------------------


def paced(
    url: str,
    dsn: str,
    api_key: str,
    workers: int,
    args: argparse.Namespace,
    log_dir: Path,
    seconds: float,
) -> dict[str, Any]:
    server = start_enqueue(url, workers, log_dir)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        request = loadgen.http_request(
            "POST",
            "127.0.0.1",
            port,
            "/v1/jobs",
            {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            json.dumps(JOB_BODY).encode(),
        )
        plan = {
            "host": "127.0.0.1",
            "port": port,
            "request": request,
            "rate": args.rate,
            "processes": args.paced_processes,
        }
        quiet = measure.wait_for_quiet(args.quiet_wait)
        loadgen.run_paced({**plan, "duration": args.warmup})  # warm up
        before = settled_counters(dsn)["jobs"]
        meter = measure.CpuMeter({"enqueue server": server.pids()}, database_name(dsn))
        meter.start()
        records = loadgen.run_paced({**plan, "duration": seconds})
        cpu = meter.stop()
        after = settled_counters(dsn)["jobs"]
    finally:
        server.stop(grace=15)
    statuses: dict[str, int] = {}
    for *_, status in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    first = min(r[0] for r in records)
    last_done = max(r[2] for r in records)
    accepted = statuses.get("202", 0)
    return {
        "workers": workers,
        "target_rate": args.rate,
        "processes": args.paced_processes,
        "requests": len(records),
        "scheduled_seconds": seconds,
        "achieved_rate": round(len(records) / (last_done - first), 1),
        "statuses": statuses,
        "accepted_202": accepted,
        "non_202": len(records) - accepted,
        "latency_from_schedule": measure.summarise_ms([d - s for s, _, d, _ in records]),
        "latency_from_send": measure.summarise_ms([d - t for _, t, d, _ in records]),
        "send_lag": measure.summarise_ms([t - s for s, t, _, _ in records]),
        "jobs_in_db": after - before,
        # A request the client gave up on (status 0) may still have been committed.
        "db_check": {
            "jobs_minus_202": after - before - accepted,
            "ok": accepted <= after - before <= accepted + statuses.get("0", 0),
            "exact": after - before == accepted,
        },
        "cpu": cpu,
        "machine_busy_cores_before": quiet,
    }


# --- the report -----------------------------------------------------------------------


def _cpu_text(cpu: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in cpu["cores_busy"].items() if v >= 0.02)


def db_check_text(p: dict[str, Any]) -> str:
    if p["db_check"].get("exact"):
        return "equals the 202s"
    if p["db_check"]["ok"]:
        return (
            f"{p['db_check']['jobs_minus_202']} more than the 202s: requests the client "
            "gave up on (status 0, after 10 s) that the server still committed"
        )
    return "DIFFERS FROM the 202s beyond what the client timeouts explain"


def markdown(data: dict[str, Any]) -> str:
    db = data["database_alone"]
    best = data["http"][str(data["chosen_workers"])]
    p = data["paced"]
    t = data["targets"]
    c = data["config"]
    lines = [
        f"# Enqueue benchmark, {data['machine']['date'][:10]}",
        "",
        *report.machine_section(
            data["machine"], [r["cpu"] for r in data["http"].values()] + [p["cpu"]]
        ),
        "## Targets",
        "",
        "| target | result | |",
        "| --- | --- | --- |",
        f"| ≥ {TARGET_RATE:,.0f} enqueues/s | {t['throughput']['value']:,.0f}/s "
        f"({data['chosen_workers']} worker(s)) | {report.met(t['throughput']['met'])} |",
        f"| p99 < {TARGET_P99_MS:.0f} ms at {p['target_rate']:.0f}/s | "
        f"{t['p99_at_rate']['value']} ms | {report.met(t['p99_at_rate']['met'])} |",
        f"| HTTP / raw single-row inserts | {t['ratio_http_to_raw_inserts']:.1%} | (reported) |",
        f"| HTTP / the same statement via asyncpg | "
        f"{t['ratio_http_to_raw_enqueue_statement']:.1%} | (reported) |",
        "",
        f"## The database alone (asyncpg, {db['raw_inserts']['connections']} connections, "
        f"{c['raw_seconds']:g} s each in 3 interleaved slices, same run)",
        "",
        "| statement | per second |",
        "| --- | --- |",
        f"| single-row INSERT, autocommit, into `raw_jobs` (jobs' columns and indexes) | "
        f"{db['raw_inserts']['per_second']:,.0f} |",
        f"| the enqueue as the service issues it (`repository.insert_job_asyncpg`: job + "
        f"event in one statement, autocommit, no NOTIFY) | "
        f"{db['enqueue_statement']['per_second']:,.0f} |",
        f"| the same statement with a NOTIFY in its transaction (what the former INSERT "
        f"trigger did) | {db['enqueue_statement_notify_in_txn']['per_second']:,.0f} |",
        "",
        f"## Throughput over HTTP (wrk, {c['connections']} connections, {c['duration']:g} s)",
        "",
        "| workers | 202/s | p50 ms | p90 ms | p99 ms | non-202 + socket errors | "
        "jobs in DB - 202s | "
        "DB sessions opened | server CPU ms/req | postgres CPU ms/req | CPU busy (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workers, r in data["http"].items():
        ms = r["cpu_ms_per_request"]
        lines.append(
            f"| {workers} | {r['accepted_per_second']:,.0f} | {r['latency_ms']['p50']} | "
            f"{r['latency_ms']['p90']} | {r['latency_ms']['p99']} | "
            f"{r['non_202']} + {r['socket_errors']} | "
            f"{r['db_check']['jobs_minus_202']} | {r['db_sessions_opened']} | "
            f"{ms['enqueue server']} | {ms['postgres']} | {_cpu_text(r['cpu'])} |"
        )
    lines += [
        "",
        f"Server: `{best['server_command']}`; wrk: `{best['command']}`. wrk stops with "
        "requests in flight, which the server may still commit, so the database may hold "
        "up to one job per connection more than the 202s wrk counted. CPU busy is from "
        "/proc over the run: `other` is whatever else ran on the machine meanwhile.",
        "",
        "```",
        best["output"].strip(),
        "```",
        "",
        f"## Latency at a fixed {p['target_rate']:.0f} requests/s "
        f"({p['workers']} worker(s), {p['scheduled_seconds']:g} s)",
        "",
        f"Open loop (bench/loadgen.py): {p['processes']} processes send at precomputed "
        "instants over keep-alive connections, opening another whenever none is idle; "
        "latency counts from the scheduled instant, so a server that falls behind shows "
        "in the numbers (no coordinated omission).",
    ]
    if p.get("overloaded"):
        lines += [
            "",
            f"**Overloaded:** the best throughput ({best['accepted_per_second']:,.0f}/s) is "
            f"below {p['target_rate']:.0f}/s, so the queue grows for the whole run and the "
            "latency says how long the backlog got, not how fast a request is served.",
        ]
    lines += [
        "",
        "| measured from | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("latency_from_schedule", "scheduled instant"),
        ("latency_from_send", "actual write"),
        ("send_lag", "(how late requests left)"),
    ):
        x = p[key]
        lines.append(f"| {label} | {x['p50_ms']} | {x['p90_ms']} | {x['p99_ms']} | {x['max_ms']} |")
    lines += [
        "",
        f"Requests {p['requests']}, achieved {p['achieved_rate']}/s, statuses {p['statuses']}; "
        f"jobs in the database {p['jobs_in_db']} "
        f"({db_check_text(p)}). "
        f"CPU busy: {_cpu_text(p['cpu'])}.",
    ]
    if data.get("profile"):
        prof = data["profile"]
        title = (
            f"Profile of the server under wrk ({prof['workers']} worker(s), "
            f"{prof['wrk_accepted_per_second']:,.0f} 202/s while sampled)"
        )
        lines += ["", pyspy.markdown(prof, title)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=32, help="wrk and raw connections")
    parser.add_argument(
        "--workers", default="1,2", help="uvicorn worker counts to compare (default 1,2)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--rate", type=float, default=500, help="fixed rate for the latency run")
    parser.add_argument("--paced-processes", type=int, default=2)
    parser.add_argument("--raw-seconds", type=float, default=6, help="seconds per raw DB run")
    parser.add_argument("--profile", action="store_true", help="also profile with py-spy")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each measured run, wait up to this many seconds for the machine to "
        "be idle (others may share it; default 20)",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    worker_counts = [int(w) for w in args.workers.split(",")]
    log_dir = args.out / "tmp"

    with scratch_database() as url:
        dsn = asyncpg_dsn(url)
        machine = report.machine()
        api_key = asyncio.run(create_tenant(url))
        log(f"the database alone, {args.connections} connections, {args.raw_seconds:g} s each")
        db = asyncio.run(database_alone(dsn, args.connections, args.raw_seconds))
        for name, r in db.items():
            log(f"  {name}: {r['per_second']:,.0f}/s")
        http: dict[str, Any] = {}
        for workers in worker_counts:
            log(f"wrk, {workers} worker(s), {args.connections} connections, {args.duration:g} s")
            r = throughput(url, dsn, api_key, workers, args, log_dir)
            http[str(workers)] = r
            log(
                f"  {r['accepted_per_second']:,.0f} 202/s, p50 {r['latency_ms']['p50']} ms, "
                f"p99 {r['latency_ms']['p99']} ms, non-202 {r['non_202']}, "
                f"jobs-202s {r['db_check']['jobs_minus_202']}, "
                f"sessions opened {r['db_sessions_opened']}, "
                f"ms/req {r['cpu_ms_per_request']}, cpu {r['cpu']['cores_busy']}"
            )
        chosen = max(worker_counts, key=lambda w: http[str(w)]["accepted_per_second"])
        overloaded = http[str(chosen)]["accepted_per_second"] < args.rate
        paced_seconds = min(args.duration, 5) if overloaded else args.duration
        log(f"fixed rate {args.rate:g}/s for {paced_seconds:g} s, {chosen} worker(s)")
        fixed = paced(url, dsn, api_key, chosen, args, log_dir, paced_seconds)
        fixed["overloaded"] = overloaded
        x = fixed["latency_from_schedule"]
        log(
            f"  p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms, max {x['max_ms']} ms, "
            f"statuses {fixed['statuses']}, db ok {fixed['db_check']['ok']}, "
            f"cpu {fixed['cpu']['cores_busy']}"
        )
        profile = None
        if args.profile:
            log(f"py-spy profile under wrk, {chosen} worker(s)")
            profile = profile_run(url, api_key, chosen, args, log_dir)

    best = http[str(chosen)]["accepted_per_second"]
    p99 = fixed["latency_from_schedule"]["p99_ms"]
    data = {
        "benchmark": "enqueue",
        "machine": machine,
        "config": {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "workers_compared": worker_counts,
            "rate": args.rate,
            "paced_processes": args.paced_processes,
            "raw_seconds": args.raw_seconds,
        },
        "database_alone": db,
        "http": http,
        "chosen_workers": chosen,
        "paced": fixed,
        "profile": profile,
        "targets": {
            "throughput": {"value": best, "target": TARGET_RATE, "met": best >= TARGET_RATE},
            "p99_at_rate": {"value": p99, "target": TARGET_P99_MS, "met": p99 < TARGET_P99_MS},
            "ratio_http_to_raw_inserts": round(best / db["raw_inserts"]["per_second"], 4),
            "ratio_http_to_raw_enqueue_statement": round(
                best / db["enqueue_statement"]["per_second"], 4
            ),
        },
    }
    report.write(args.out, "enqueue", data, markdown(data))
    return 0


def profile_run(
    url: str, api_key: str, workers: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    server = start_enqueue(url, workers, log_dir)
    out = log_dir / "enqueue-profile.txt"
    try:
        run_wrk(server.url, api_key, args.warmup, args.connections, args.wrk_threads)
        seconds = min(args.duration, 15)
        with pyspy.record(server.pid, out, seconds + 1):
            wrk = run_wrk(server.url, api_key, seconds, args.connections, args.wrk_threads)
    finally:
        server.stop(grace=15)
    summary = pyspy.summarise(out)
    summary["wrk_accepted_per_second"] = wrk["accepted_per_second"]
    summary["workers"] = workers
    summary["raw_file"] = str(out)
    return summary
