"""Peak resident memory of the transcriber while a webhook receiver answers 1 GiB.

    .venv/bin/python -m bench webhook-memory               # 200 and 500, each with 1 GiB
    .venv/bin/python -m bench webhook-memory --gib 4

The transcriber runs as its own process (``transcription serve transcriber``) on a scratch
PostgreSQL database; no model server is needed: each job is inserted with its transcript
already stored, so its attempt only delivers it. The receiver (``testkit.webhook_receiver``,
behaviour ``huge``), in a thread of this process with its own event loop, reads the request
and answers ``200`` (then ``500``) with a ``Content-Length`` of ``--gib`` GiB, sending the
body in 64 KiB pieces made as it goes, until the client hangs up; it counts the bytes it
got out. A first job to a receiver answering ``204`` warms the process up. For each job:
the claim is made here (``repository.claim_due_jobs``), the trigger is posted to the
transcriber, its peak RSS is reset before (``/proc/<pid>/clear_refs`` ← 5) and read back
(``VmHWM``) once the job has left PROCESSING. Run against a snapshot of a commit before
the fix (bench/README.md, "a snapshot"), it shows the body read whole.

Target: peak < 400 MB. Results: ``bench/results/webhook-memory-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench import measure, report, stack
from bench.database import scratch_database
from testkit.machine import loadavg
from testkit.ports import free_port
from testkit.procs import Service
from testkit.rawhttp import InThread
from testkit.webhook_receiver import WebhookReceiver
from transcription_core import repository as repo
from transcription_core.db import create_engine

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--gib", "0.05"]


GIB = 1 << 30
TARGET_MB = 400.0
TRANSCRIPT = {"text": "hello", "language": "en", "duration": 1.0, "segments": []}


async def deliver_once(
    url: str, transcriber: str, pid: int, receiver: WebhookReceiver, tenant: str
) -> dict[str, Any]:
    engine = create_engine(url, "bench-webhook-memory", 2)
    try:
        async with engine.begin() as conn:
            job = await repo.insert_job(
                conn,
                repo.NewJob(
                    tenant=tenant,
                    media_url="https://media.example.com/a.mp3",
                    webhook_url=receiver.hook_url(tenant, "huge"),
                ),
            )
            await repo.save_transcript(conn, job.id, TRANSCRIPT)
        async with engine.begin() as conn:
            (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=600)
        base = measure.rss_kib(pid)
        measure.reset_peak_rss(pid)
        samples: list[int] = []
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                transcriber + "/v1/triggers",
                json={"job_id": claimed.id, "attempt": claimed.attempt},
            )
            assert answer.status_code == 202, answer.text
        while True:
            samples.append(measure.rss_kib(pid))
            async with engine.connect() as conn:
                row = await repo.get_job(conn, job.id)
            assert row is not None
            if row.status not in ("TRIGGERED", "PROCESSING"):
                break
            if time.monotonic() - started > 600:
                raise TimeoutError("the delivery did not end within 600 s")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - started
        return {
            "receiver_status": receiver.huge_status,
            "body_bytes_offered": receiver.huge_bytes,
            "body_bytes_sent_before_hang_up": receiver.huge_sent,
            "job_status": row.status,
            "failure_detail": row.failure_detail,
            "wall_seconds": round(wall, 2),
            "rss_before_mb": round(base / 1024, 1),
            "peak_rss_mb": round(measure.rss_kib(pid, "VmHWM") / 1024, 1),
            "peak_rss_sampled_mb": round(max(samples) / 1024, 1),
            "loadavg": loadavg(),
        }
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the answer's body")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--name", default="webhook-memory")
    args = parser.parse_args(argv)
    info = report.machine()
    size = int(args.gib * GIB)
    jobs: list[dict[str, Any]] = []
    receiver = WebhookReceiver()
    log_dir = report.TMP / "webhook-memory-logs"
    with InThread(receiver):
        with scratch_database("bench_webhook_memory") as url:
            env = stack.base_env(url)
            tenant = "org-bench"
            engine_setup = create_engine(url, "bench-webhook-memory", 1)

            async def create_tenant() -> None:
                async with engine_setup.begin() as conn:
                    await repo.create_tenant(conn, tenant)
                await engine_setup.dispose()

            asyncio.run(create_tenant())
            server = Service(
                "transcriber", "transcriber", free_port(), env, log_dir / "transcriber.log"
            )
            server.start()
            try:
                server.wait_ready_blocking(120)
                for label, status, body in [("warm-up", 204, 0), ("200", 200, size),
                                            ("500", 500, size)]:  # fmt: skip
                    receiver.huge_status, receiver.huge_bytes, receiver.huge_sent = status, body, 0
                    out = asyncio.run(deliver_once(url, server.url, server.pid, receiver, tenant))
                    report.log(
                        f"{label}: {out['job_status']} in {out['wall_seconds']} s, peak "
                        f"{out['peak_rss_mb']} MB, {out['body_bytes_sent_before_hang_up']} "
                        "bytes sent"
                    )
                    jobs.append({"job": label, **out})
            finally:
                server.stop(grace=15)
    result = {"machine": info, "loadavg_at_end": loadavg(), "gib": args.gib, "jobs": jobs}
    write_report(result, args.out, args.name)


def write_report(result: dict[str, Any], out: Path, name: str) -> None:
    info = result["machine"]
    lines = [
        f"# Transcriber peak memory while a webhook receiver answers {result['gib']:g} GiB",
        "",
        report.machine_markdown(info),
        "- service code: "
        + (
            f"a snapshot of commit {info['code']['snapshot_commit']}"
            if info["code"]["snapshot_commit"]
            else "the working tree"
        ),
        f"- load average (1, 5, 15 min) at start {info['loadavg_at_start']}, at end "
        f"{result['loadavg_at_end']}; **the machine was shared with other sessions' tests "
        "and benchmarks**",
        "",
        "The transcriber process only (`VmHWM` after its peak was reset before the job); "
        "MB = MiB. Each job only delivers a stored transcript; bytes sent is what the "
        "receiver got into its socket before the transcriber hung up (the kernel's "
        "buffers, not what the transcriber read).",
        "",
        "| job | receiver answers | body offered MiB | sent before hang-up MiB | job ends | "
        "wall s | RSS before MB | **peak RSS MB** | load |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for j in result["jobs"]:
        lines.append(
            f"| {j['job']} | {j['receiver_status']} | {j['body_bytes_offered'] / (1 << 20):.0f} "
            f"| {j['body_bytes_sent_before_hang_up'] / (1 << 20):.1f} | {j['job_status']} | "
            f"{j['wall_seconds']} | {j['rss_before_mb']} | **{j['peak_rss_mb']}** | "
            f"{j['loadavg']} |"
        )
    big = [j for j in result["jobs"] if j["body_bytes_offered"]]
    worst = max(j["peak_rss_mb"] for j in big)
    lines += [
        "",
        f"Target: peak < {TARGET_MB:.0f} MB while a receiver answers {result['gib']:g} GiB: "
        f"worst {worst} MB, **{report.met(worst < TARGET_MB)}**.",
    ]
    print("\n".join(lines))
    report.write(out, name, result, "\n".join(lines))
