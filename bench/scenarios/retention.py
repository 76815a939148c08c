"""Retention under steady load: the tables stop growing once the window is reached.

Run: ``.venv/bin/python -m bench retention [--rate 20] [--window 30] [--seconds 150]``

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
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import report
from bench.database import scratch_database
from orchestrator_service.retention import retain_forever
from orchestrator_service.settings import OrchestratorSettings
from transcription_core import lifecycle
from transcription_core import repository as repo
from transcription_core.db import create_engine
from transcription_core.job import Message
from transcription_core.models import utcnow

#: The options of the smallest run (``python -m bench --smoke``): a 5 s window, 20 s.
SMOKE = ["--window", "5", "--seconds", "20", "--vacuum-every", "10"]

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


log = report.log


async def one_job(engine: Any) -> None:
    """A job through its whole life, as the services write it: enqueued, claimed
    (TRIGGERED), started (PROCESSING), its chunks and transcript saved, delivered
    (SUCCEEDED, with its webhook payload)."""
    async with engine.begin() as conn:
        job = await repo.insert_job(
            conn,
            repo.NewJob(
                tenant="org-bench",
                media_url="https://bucket.example.com/v/1.mp4",
                webhook_url="https://api.example.com/hooks/t",
            ),
        )
        job = await repo.apply(conn, lifecycle.claimed(job, 300, utcnow()), "orchestrator")
        assert job is not None
        job = await repo.apply(conn, lifecycle.started(job, 300, utcnow()), "worker")
        assert job is not None
        for index in range(3):
            await repo.save_chunk(
                conn, job.id, index, index * 200.0, index * 200.0 + 200, {"text": "x" * 500}
            )
        await repo.save_transcript(conn, job.id, TRANSCRIPT)
        message = Message(
            repo.SUCCEEDED_EVENT,
            repo.new_message_id(),
            '{"type": "transcription.succeeded", "data": {}}' + " " * 2000,
        )
        await repo.apply(conn, lifecycle.delivered(job, message, utcnow()), "worker")


async def counts(engine: Any) -> dict[str, Any]:
    """The four tables' rows, from one snapshot (the retention loop deletes meanwhile)."""
    row: dict[str, Any] = {}
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
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
        report.machine_markdown(data["machine"]),
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
        f"{f['made_meanwhile']:,} more jobs were made: flat, **{report.met(f['met'])}** "
        f"(the spread is at most one retention interval's jobs, {f['allowed']:,}, plus one "
        "sample interval's).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    with scratch_database() as url:
        machine = report.machine()
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
        "config": vars(args) | {"out": str(args.out)},
        "result": result,
        "flat": flat,
    }
    report.write(args.out, "retention", data, markdown(data))
    log(f"job count after two windows: {low}..{high} (flat: {flat['met']})")
    return 0
