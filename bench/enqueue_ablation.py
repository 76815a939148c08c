"""What each proposed change to the enqueue path is worth, measured one step at a time.

Run: ``.venv/bin/python bench/enqueue_ablation.py [--duration 10] [--connections 32]
[--out bench/results]``

The service's code is not changed: ``bench/patched_enqueue_app.py`` applies each change
from outside (FastAPI ``dependency_overrides``, monkeypatches, settings), and the
NOTIFY change also alters the trigger in the scratch database. The steps are
cumulative, in this order, each a wrk run like ``bench/enqueue.py``'s:

1. as shipped (``transcription serve enqueue``, one worker);
2. a pool as large as the concurrency (``DATABASE_POOL_SIZE=32``: a setting): the
   default 10 + 10 overflow, under 32 concurrent requests, opens and closes
   connections all the time;
3. no pool pre-ping (three round trips fewer per request);
4. the job INSERT no longer NOTIFYs: a coalesced NOTIFY (at most one per 10 ms) from
   the enqueue process after commit;
5. all of the above with two uvicorn workers (a pool of 32 each);
6. as shipped with two uvicorn workers, for comparison.

Results: ``<out>/enqueue-ablation-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import enqueue

from enqueue_service import service
from enqueue_service.schemas import JobCreate
from enqueue_service.settings import EnqueueSettings
from transcription_core.db import asyncpg_dsn, create_engine
from transcription_core.schemas import JobResource

FACTORY = "patched_enqueue_app:create_app"

#: (label, BENCH_PATCHES, DATABASE_POOL_SIZE or None for the default, workers, patched)
STEPS: tuple[tuple[str, str, str | None, int, bool], ...] = (
    ("as shipped", "", None, 1, False),
    ("+ DATABASE_POOL_SIZE=32 (no pool churn)", "", "32", 1, True),
    ("+ no pool pre-ping", "no_pre_ping", "32", 1, True),
    ("+ NOTIFY coalesced, after commit", "no_pre_ping,coalesced_notify", "32", 1, True),
    ("all of the above, 2 workers", "no_pre_ping,coalesced_notify", "32", 2, True),
    ("as shipped, 2 workers", "", None, 2, False),
)


# --- CPU per enqueue, layer by layer (in-process, one call at a time) -----------------


async def _cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int) -> dict[str, float]:
    """This process's CPU milliseconds per call (and wall), after a warm-up: CPU time is
    what other load on the machine changes least."""
    for _ in range(min(50, calls)):
        await call()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for _ in range(calls):
        await call()
    return {
        "cpu_ms": round((time.process_time() - cpu0) / calls * 1000, 3),
        "wall_ms": round((time.monotonic() - wall0) / calls * 1000, 3),
    }


async def layers(url: str, api_key: str, calls: int, repeats: int = 3) -> list[dict[str, Any]]:
    """The enqueue path's parts, each measured alone, sequentially, in this process;
    ``repeats`` rounds, the least CPU per call kept (other load only ever adds)."""
    dsn = asyncpg_dsn(url)
    settings = EnqueueSettings(database_url=url)
    raw_body = json.dumps(benchlib.JOB_BODY).encode()
    body = JobCreate.model_validate_json(raw_body)
    cache = service.ApiKeyCache(60)
    engine = create_engine(url, "bench-layers", 10)
    conn = await asyncpg.connect(dsn)

    async def enqueue_call() -> Any:
        return await service.enqueue(engine, settings, enqueue.TENANT, body, None)

    async def parse_and_check() -> None:
        parsed = JobCreate.model_validate_json(raw_body)
        service.validate_job(parsed, settings)
        parsed.canonical_json()

    async def authenticate() -> None:
        await service.authenticate(engine, cache, f"Bearer {api_key}")

    row = (await enqueue_call()).job

    async def respond() -> None:
        JobResource.from_row(row).model_dump_json()

    async def transaction() -> None:
        await enqueue._enqueue_transaction(conn)

    async def one_statement() -> None:
        await enqueue._enqueue_one_statement(conn)

    def pre_ping(on: bool) -> Callable[[], None]:
        def apply() -> None:
            engine.sync_engine.pool._pre_ping = on

        return apply

    shipped = pre_ping(True)
    steps: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], None]]] = [
        (
            "JobCreate from JSON + validate_job + request hash (pure Python)",
            parse_and_check,
            shipped,
        ),
        ("authenticate, key cached", authenticate, shipped),
        ("JobResource.from_row + model_dump_json", respond, shipped),
        (
            "service.enqueue as shipped (SQLAlchemy, pool pre-ping, one CTE statement)",
            enqueue_call,
            shipped,
        ),
        ("  without the pool pre-ping", enqueue_call, pre_ping(False)),
        (
            "the same CTE statement through asyncpg alone (autocommit)",
            one_statement,
            shipped,
        ),
        (
            "the former transaction through asyncpg alone (BEGIN, 2 INSERTs, COMMIT)",
            transaction,
            shipped,
        ),
    ]
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in steps}
    try:
        for _ in range(repeats):  # round-robin, so a burst of other load hits all alike
            for label, call, prepare in steps:
                prepare()
                samples[label].append(await _cpu_per_call(call, calls))
    finally:
        shipped()
        await conn.close()
        await engine.dispose()
    results = []
    for label, runs in samples.items():
        cpu = sorted(r["cpu_ms"] for r in runs)
        wall = sorted(r["wall_ms"] for r in runs)
        results.append(
            {
                "layer": label,
                "cpu_ms": cpu[0],
                "cpu_ms_median": cpu[len(cpu) // 2],
                "wall_ms": wall[0],
                "repeats": len(runs),
            }
        )
    return results


def markdown(data: dict[str, Any]) -> str:
    c = data["config"]
    lines = [
        f"# Enqueue ablation, {data['machine']['date'][:10]}",
        "",
        "## Machine",
        "",
        benchlib.machine_markdown(data["machine"]),
        f"- load average when the run started: {data['machine']['loadavg_at_start']}",
        "",
        *(
            [note, ""]
            if (
                note := benchlib.shared_machine_note(
                    [s["result"]["cpu"] for s in data["steps"]] + [data["http_floor"]["cpu"]]
                )
            )
            else []
        ),
        f"Cumulative steps, each a wrk run ({c['connections']} connections, "
        f"{c['duration']:g} s after {c['warmup']:g} s of warm-up) on the same scratch "
        "database; the service's code is unchanged, the changes are applied from "
        "outside by `bench/patched_enqueue_app.py`. CPU ms per request is CPU time "
        "over the run divided by requests: less sensitive to other load on the machine "
        "than the rate is.",
        "",
        "## Where the CPU goes: the enqueue path's layers, each alone",
        "",
        f"In the benchmark's process, one call at a time ({data['config']['calls']} calls "
        "after a warm-up, uvloop, 3 rounds in turn, the least kept), CPU time of this "
        "process per call (PostgreSQL's time is not in it). For scale, the HTTP floor of "
        "the same server (`GET /healthz` under "
        f"wrk) costs {data['http_floor']['server_cpu_ms_per_request']} ms of server CPU "
        "per request.",
        "",
        "| layer | CPU ms per call (least) | (median) | wall ms per call (least) |",
        "| --- | --- | --- | --- |",
        *[
            f"| {x['layer']} | {x['cpu_ms']} | {x['cpu_ms_median']} | {x['wall_ms']} |"
            for x in data["layers"]
        ],
        "",
        "## Cumulative changes under wrk",
        "",
        "| step | workers | 202/s | p50 ms | p99 ms | non-202 | DB sessions opened | "
        "server CPU ms/req | postgres CPU ms/req | CPU busy (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for step in data["steps"]:
        r = step["result"]
        ms = r["cpu_ms_per_request"]
        busy = ", ".join(f"{k} {v}" for k, v in r["cpu"]["cores_busy"].items() if v >= 0.02)
        lines.append(
            f"| {step['label']} | {step['workers']} | {r['accepted_per_second']:,.0f} | "
            f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | {r['non_202']} | "
            f"{r['db_sessions_opened']} | {ms['enqueue server']} | {ms['postgres']} | {busy} |"
        )
    return "\n".join(lines)


def run_uvloop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def http_floor(url: str, dsn: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """``GET /healthz`` under wrk on the shipped server: what HTTP + FastAPI cost alone."""
    server = enqueue.start_enqueue(url, 1, log_dir, name="ablation-floor")
    try:
        benchlib.wait_for_quiet(args.quiet_wait)
        meter = benchlib.CpuMeter({"enqueue server": server.pids()}, benchlib.database_name(dsn))
        meter.start()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", "-d5s", server.url + "/healthz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        cpu = meter.stop()
    finally:
        server.stop()
    requests = int(next(x for x in out.splitlines() if "requests in" in x).split()[0])
    return {
        "requests_per_second": round(requests / cpu["wall_seconds"], 1),
        "server_cpu_ms_per_request": round(
            1000 * cpu["cpu_seconds"]["enqueue server"] / max(requests, 1), 3
        ),
        "cpu": cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300, help="calls per layer measured")
    parser.add_argument(
        "--steps",
        default="all",
        help="which wrk steps to run: 'all', 'none', or numbers such as 1,6,7",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=20, help="seconds to wait for an idle machine"
    )
    parser.add_argument("--out", type=Path, default=enqueue.HERE / "results")
    args = parser.parse_args()
    benchlib.stop_on_sigterm()
    log_dir = args.out / "tmp"
    steps = []
    layer_results: list[dict[str, Any]] = []
    floor: dict[str, Any] = {}
    with benchlib.scratch_database() as url:
        dsn = asyncpg_dsn(url)
        machine = benchlib.machine_info(asyncio.run(benchlib.postgres_version(dsn)))
        api_key = asyncio.run(enqueue.create_tenant(url))
        enqueue.log(f"layers of the enqueue path, {args.calls} calls each")
        layer_results = run_uvloop(layers(url, api_key, args.calls))
        for x in layer_results:
            enqueue.log(f"  {x['cpu_ms']:7.3f} ms CPU  {x['wall_ms']:7.3f} ms wall  {x['layer']}")
        floor = http_floor(url, dsn, args, log_dir)
        enqueue.log(f"  HTTP floor: {floor}")
        insert_notifies = True
        wanted = (
            set(range(1, len(STEPS) + 1))
            if args.steps == "all"
            else set()
            if args.steps == "none"
            else {int(x) for x in args.steps.split(",")}
        )
        for i, (label, patches, pool, workers, patched) in enumerate(STEPS):
            if i + 1 not in wanted:
                continue
            wants_notify = "coalesced_notify" not in patches
            if wants_notify != insert_notifies:
                asyncio.run(enqueue.set_insert_notify(dsn, wants_notify))
                insert_notifies = wants_notify
            env = {"BENCH_PATCHES": patches}
            if pool is not None:
                env["DATABASE_POOL_SIZE"] = pool
            enqueue.log(f"{label} ({workers} worker(s))")
            server = enqueue.start_enqueue(
                url,
                workers,
                log_dir,
                factory=FACTORY if patched else None,
                env=env,
                name=f"ablation-{i}",
            )
            try:
                r = enqueue.measure_wrk(server, dsn, api_key, args.duration, args)
            finally:
                server.stop()
            r.pop("output")
            enqueue.log(
                f"  {r['accepted_per_second']:,.0f} 202/s, p50 {r['latency_ms']['p50']} ms, "
                f"p99 {r['latency_ms']['p99']} ms, sessions opened {r['db_sessions_opened']}, "
                f"ms/req {r['cpu_ms_per_request']}, cpu {r['cpu']['cores_busy']}"
            )
            steps.append(
                {
                    "label": label,
                    "patches": patches,
                    "database_pool_size": pool,
                    "workers": workers,
                    "result": r,
                }
            )
    data = {
        "benchmark": "enqueue-ablation",
        "machine": machine,
        "config": {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "calls": args.calls,
        },
        "layers": layer_results,
        "http_floor": floor,
        "steps": steps,
    }
    for path in benchlib.write_results(args.out, "enqueue-ablation", data, markdown(data)):
        enqueue.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
