"""Retention under steady load: the tables stop growing once the window is reached.

Run: ``.venv/bin/python bench/retention.py [--rate 20] [--window 30] [--seconds 150]``

On a scratch PostgreSQL database, jobs arrive at ``--rate`` per second and each goes
the whole way through the repository's functions (enqueued, claimed, processing, its
transcript and three chunks saved, SUCCEEDED with its webhook payload: four events),
while the orchestrator's retention loop (``orchestrator_service.retention``) runs as in
the service, with ``RETENTION_DAYS`` set to ``--window`` seconds, every 5 s, in batches
of 100. Every 5 s it counts the rows of ``jobs``, ``job_events``, ``job_chunks`` and
``transcripts`` and notes the tables' size on disk (where the server runs without
autovacuum, the benchmark vacuums the four tables every ``--vacuum-every`` seconds in its
place). The row counts must grow for one window, then stay flat (within one retention
interval's worth of jobs), and the size with them. Results:
``<out>/retention-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from orchestrator_service.retention import retain_forever
from orchestrator_service.settings import OrchestratorSettings
from transcription_core import repository as repo
from transcription_core.db import asyncpg_dsn, create_engine
from transcription_core.status import JobStatus

HERE = Path(__file__).resolve().parent
INTERVAL = 5.0
TABLES = ("jobs", "job_events", "job_chunks", "transcripts")
TRANSCRIPT = {
    "text": "And so my fellow Americans, ask not what your country can do for you. " * 20,
    "language": "en",
    "duration": 600.0,
    "segments": [
        {"id": n, "start": n * 10.0, "end": n * 10.0 + 10, "text": "words"} for n in range(60)
    ],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def one_job(engine: Any) -> None:
    """A job through its whole life, as the services write it."""
    async with engine.begin() as conn:
        job = await repo.insert_job(
            conn,
            repo.NewJob(
                tenant="org-bench",
                media_url="https://bucket.example.com/v/1.mp4",
                webhook_url="https://api.example.com/hooks/t",
            ),
        )
        await repo.transition(
            conn,
            job["id"],
            from_status=JobStatus.QUEUED,
            to_status=JobStatus.TRIGGERED,
            attempt=0,
            actor="orchestrator",
            attempts=1,
        )
        await repo.transition(
            conn,
            job["id"],
            from_status=JobStatus.TRIGGERED,
            to_status=JobStatus.PROCESSING,
            attempt=1,
            actor="worker",
        )
        for index in range(3):
            await repo.save_chunk(
                conn, job["id"], index, index * 200.0, index * 200.0 + 200, {"text": "x" * 500}
            )
        await repo.save_transcript(conn, job["id"], TRANSCRIPT)
        await repo.transition(
            conn,
            job["id"],
            from_status=JobStatus.PROCESSING,
            to_status=JobStatus.SUCCEEDED,
            attempt=1,
            actor="worker",
            webhook_event=repo.SUCCEEDED_EVENT,
            webhook_message_id=repo.new_message_id(),
            webhook_payload='{"type": "transcription.succeeded", "data": {}}' + " " * 2000,
        )


async def counts(engine: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in TABLES:
            row[table] = int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")))
        row["size_mb"] = round(
            int(
                await conn.scalar(
                    sa.text(
                        "SELECT sum(pg_total_relation_size(c)) FROM unnest("
                        "ARRAY['jobs', 'job_events', 'job_chunks', 'transcripts']::regclass[]) c"
                    )
                )
            )
            / 1e6,
            2,
        )
    return row


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(url, "bench-retention", 4)
    async with engine.begin() as conn:
        await repo.create_tenant(conn, "org-bench")
    settings = OrchestratorSettings(
        database_url=url,
        retention_days=args.window / 86400,
        retention_interval_seconds=INTERVAL,
        retention_batch_size=100,
        retention_max_batches=100,
    )
    retention = asyncio.create_task(retain_forever(engine, settings))
    async with engine.connect() as conn:
        autovacuum = await conn.scalar(sa.text("SHOW autovacuum"))
    vacuums = 0

    async def vacuum_forever() -> None:
        """In autovacuum's place, where the server runs without it."""
        nonlocal vacuums
        while True:
            await asyncio.sleep(args.vacuum_every)
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text(f"VACUUM {', '.join(TABLES)}"))
            vacuums += 1

    vacuum = asyncio.create_task(vacuum_forever()) if autovacuum == "off" else None
    samples: list[dict[str, Any]] = []
    made = 0
    started = time.monotonic()
    next_sample = 0.0
    try:
        while (elapsed := time.monotonic() - started) < args.seconds:
            if elapsed >= next_sample:
                samples.append({"t": round(elapsed, 1), "made": made} | await counts(engine))
                s = samples[-1]
                log(f"t={s['t']:>6} s made {made:>5} rows {[s[t] for t in TABLES]}")
                next_sample += INTERVAL
            due = made / args.rate
            if elapsed < due:
                await asyncio.sleep(due - elapsed)
            await one_job(engine)
            made += 1
        samples.append(
            {"t": round(time.monotonic() - started, 1), "made": made} | await counts(engine)
        )
    finally:
        for task in (retention, vacuum):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
    return {"samples": samples, "made": made, "autovacuum": autovacuum, "vacuums_run": vacuums}


def markdown(data: dict[str, Any]) -> str:
    c = data["config"]
    lines = [
        "# Retention under steady load",
        "",
        benchlib.machine_markdown(data["machine"]),
        "",
        f"{c['rate']:g} jobs a second, each with four events, three chunks, a transcript and "
        f"a webhook payload; retention window {c['window']:g} s, run every {INTERVAL:g} s "
        "by the orchestrator's retention loop, 100 jobs per transaction. "
        + (
            f"Autovacuum is off on this server: the benchmark ran `VACUUM` on the four tables "
            f"every {c['vacuum_every']:g} s in its place ({data['result']['vacuums_run']} times), "
            "so the space of deleted rows is reused as it would be in production."
            if data["result"]["autovacuum"] == "off"
            else "Autovacuum reclaims the space of deleted rows."
        ),
        "",
        "| t (s) | jobs made | jobs | job_events | job_chunks | transcripts | size (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in data["result"]["samples"]:
        lines.append(
            f"| {s['t']:g} | {s['made']:,} | {s['jobs']:,} | {s['job_events']:,} | "
            f"{s['job_chunks']:,} | {s['transcripts']:,} | {s['size_mb']} |"
        )
    f = data["flat"]
    lines += [
        "",
        f"After two windows the job count stays between {f['min']:,} and {f['max']:,} while "
        f"{f['made_meanwhile']:,} more jobs were made: flat, **{benchlib.met(f['met'])}** "
        f"(the spread is at most one retention interval's jobs, {f['allowed']:,}, plus one "
        "sample interval's).",
    ]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the project, as the results record it (no machine's paths)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="jobs per second")
    parser.add_argument("--window", type=float, default=30.0, help="retention, seconds")
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the run")
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=30.0,
        help="seconds between VACUUMs run in autovacuum's place, where it is off",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    benchlib.stop_on_sigterm()
    with benchlib.scratch_database() as url:
        machine = benchlib.machine_info(asyncio.run(benchlib.postgres_version(asyncpg_dsn(url))))
        result = asyncio.run(run(url, args))
    later = [s for s in result["samples"] if s["t"] >= 2 * args.window]
    allowed = int(2 * INTERVAL * args.rate)
    low, high = min(s["jobs"] for s in later), max(s["jobs"] for s in later)
    flat = {
        "min": low,
        "max": high,
        "made_meanwhile": later[-1]["made"] - later[0]["made"],
        "allowed": allowed,
        "met": high - low <= allowed,
    }
    data = {
        "benchmark": "retention",
        "machine": machine,
        "config": vars(args) | {"out": _shown(args.out)},
        "result": result,
        "flat": flat,
    }
    for path in benchlib.write_results(args.out, "retention", data, markdown(data)):
        log(f"wrote {path}")
    log(f"job count after two windows: {low}..{high} (flat: {flat['met']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
