"""Sustained load: short real speech clips enqueued at a fixed rate through the whole service.

    .venv/bin/python -m bench sustained                           # probe, ramp, 10 min at 10/s
    .venv/bin/python -m bench sustained --minutes 1 --rate 2 --no-ramp   # a smoke run
    .venv/bin/python -m bench sustained --probe-only --set MAX_BATCH_SIZE=8   # one setting

The four services run as processes (``transcription serve ...``) on a scratch PostgreSQL
database with tiny.en (int8, CPU); a media server serves the clips and a webhook receiver
records every delivery, both on loopback in this process (``bench.stack``). Jobs
alternate between the clips (``--clips``: hotwords.mp3, 4 s, and jfk.flac, 11 s), with
``language="en"``.

Phases, one after another on the same services (each waits for the previous one's jobs to
be delivered first):

1. **capacity probe** (``--probe-jobs``, 200): that many jobs enqueued at once; the rate of
   webhooks between the 20th and 80th percentile of arrivals is the service's capacity,
   in jobs per second, when it always has work;
2. **ramp** (unless ``--no-ramp``): open-loop steps of ``--step-seconds`` (60) at 0.6, 0.8,
   1.0 and 1.2 x the probed capacity (or ``--ramp-rates``); a step is *sustained* when at
   most 2 s worth of jobs (at least 2) are still QUEUED at its end and its jobs' median
   latency is at most 10 s (``kept_up``). The
   highest sustained step is the maximum sustainable rate (``--rate sustainable`` runs it);
3. **the run**: ``--rate`` (10) jobs/s for ``--minutes`` (10), open loop: job ``i`` is
   sent at ``start + i / rate`` whatever the service answers (no coordinated omission);
   then up to ``--drain-minutes`` for the backlog to be delivered.

Measured: each job's end-to-end latency, from its *scheduled* enqueue instant to its
webhook's arrival (one monotonic clock, this process); queue depth (jobs by status, every
second, from the database); at the end, every job's status (each must be ``SUCCEEDED``),
its attempts, and the deliveries: each job's webhook must arrive exactly once (duplicates
counted by ``webhook-id``) with a valid Standard Webhooks signature. Plus the model
server's batches, the transcriber's refused triggers, and CPU by process group.

Settings (``--set NAME=VALUE`` overrides, applied to every service; all are recorded):
MAX_CONCURRENT_TRANSCRIPTION_JOBS=16, WORKER_MAX_JOBS=16, CHUNK_CONCURRENCY=4,
MAX_BATCH_SIZE=16, BATCH_WAIT_MS=10, MODEL_CPU_THREADS=nproc, WEBHOOK_RETRY_SCHEDULE
default. Results: ``bench/results/sustained-<date>.json``, ``.md`` and ``.png`` (queue
depth, latency and throughput over time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import measure, report, stack
from bench.database import database_name, sample_every_second, scratch_database
from testkit.data import DATA
from testkit.machine import loadavg
from transcription_core.db import asyncpg_dsn

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = [
    "--minutes",
    "0.25",
    "--rate",
    "1",
    "--no-ramp",
    "--probe-jobs",
    "0",
    "--drain-minutes",
    "2",
]


TERMINAL = ("SUCCEEDED", "PERMAFAILED", "CANCELED")


def default_settings(threads: int) -> dict[str, str]:
    return {
        "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "16",
        "WORKER_MAX_JOBS": "16",
        "CHUNK_CONCURRENCY": "4",
        "MAX_BATCH_SIZE": "16",
        "BATCH_WAIT_MS": "10",
        "MODEL": "tiny.en",
        "MODEL_DEVICE": "cpu",
        "MODEL_COMPUTE_TYPE": "int8",
        "MODEL_CPU_THREADS": str(threads),
    }


@dataclass
class Job:
    index: int
    phase: str
    clip: str
    scheduled: float  # monotonic
    sent: float | None = None
    answered: float | None = None
    job_id: str | None = None
    error: str | None = None


@dataclass
class Run:
    services: stack.Services
    peers: stack.Peers
    t0: float = field(default_factory=time.monotonic)
    jobs: list[Job] = field(default_factory=list)
    by_id: dict[str, Job] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)

    def job_records(self) -> list[dict[str, Any]]:
        """Every job: phase, clip, when it was scheduled (s from the start), how long its
        POST took, its latency to its first webhook, its enqueue error."""
        delivered = self.first_delivery()
        return [
            {
                "phase": j.phase,
                "clip": j.clip,
                "scheduled_s": round(j.scheduled - self.t0, 3),
                "enqueue_ms": round((j.answered - j.scheduled) * 1000, 1) if j.answered else None,
                "latency_s": round(delivered[j.job_id] - j.scheduled, 3)
                if j.job_id in delivered
                else None,
                "error": j.error,
            }
            for j in self.jobs
        ]

    def first_delivery(self) -> dict[str, float]:
        """Job id → monotonic arrival of its first delivery."""
        out: dict[str, float] = {}
        for r in list(self.peers.receiver.deliveries):
            if r.job_id is not None and r.job_id not in out:
                out[r.job_id] = r.at_monotonic
        return out


async def send_jobs(
    run: Run,
    client: httpx.AsyncClient,
    phase: str,
    rate: float | None,
    count: int,
    clips: list[str],
) -> list[Job]:
    """Enqueue ``count`` jobs open-loop at ``rate`` per second (``None``: all at once)."""
    start = time.monotonic() + 0.05
    jobs = [
        Job(
            len(run.jobs) + i,
            phase,
            clips[(len(run.jobs) + i) % len(clips)],
            start + (i / rate if rate else 0.0),
        )
        for i in range(count)
    ]
    run.jobs.extend(jobs)
    tasks = []

    async def post(job: Job) -> None:
        job.sent = time.monotonic()
        try:
            created = await stack.enqueue(
                client,
                run.services,
                run.peers.media_url(job.clip),
                run.peers.hook_url(run.services),
                language="en",
                external_id=f"{phase}-{job.index}",
            )
        except Exception as exc:  # counted, and the run goes on
            job.error = f"{type(exc).__name__}: {exc}"[:300]
            return
        job.answered = time.monotonic()
        job.job_id = created["id"]
        run.by_id[created["id"]] = job

    for job in jobs:
        delay = job.scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(job)))
    await asyncio.gather(*tasks)
    return jobs


async def sample_queue(run: Run, stop: asyncio.Event) -> None:
    """Jobs by status and deliveries, every second, from the database."""

    async def read(conn: asyncpg.Connection) -> dict[str, Any]:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        return {
            "counts": {r["status"]: r["n"] for r in rows},
            "delivered": len(run.peers.receiver.deliveries),
            "load1": float(loadavg().split()[0]),
        }

    await sample_every_second(run.services.database_url, stop, run.t0, run.samples, read)


async def wait_delivered(run: Run, jobs: list[Job], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    ids = {j.job_id for j in jobs if j.job_id}
    while time.monotonic() < deadline:
        if ids <= set(run.first_delivery()):
            return True
        await asyncio.sleep(0.5)
    return False


def phase_stats(run: Run, jobs: list[Job], start: float, end: float) -> dict[str, Any]:
    """Latency and throughput of one phase's jobs (monotonic ``start``/``end``)."""
    delivered = run.first_delivery()
    latencies = [delivered[j.job_id] - j.scheduled for j in jobs if j.job_id in delivered]
    arrivals = sorted(delivered[j.job_id] for j in jobs if j.job_id in delivered)
    in_window = [a for a in arrivals if start <= a <= end]
    enqueue_latency = [j.answered - j.scheduled for j in jobs if j.answered is not None]
    return {
        "jobs": len(jobs),
        "enqueue_errors": sum(1 for j in jobs if j.error),
        "delivered": len(latencies),
        "delivered_within_phase": len(in_window),
        "completion_rate_per_s": round(len(in_window) / (end - start), 3) if end > start else None,
        "e2e_latency": measure.summarise_ms(latencies),
        "enqueue_latency": measure.summarise_ms(enqueue_latency),
    }


def backlog_limit(rate: float) -> float:
    """At most this many jobs still QUEUED at the end of a step or run: 2 s worth, at
    least 2 (an overloaded service's backlog grows all the time)."""
    return max(2.0, 2.0 * rate)


#: ... and the median latency of its jobs at most this: the in-flight slots
#: (MAX_CONCURRENT_TRANSCRIPTION_JOBS) hide a backlog of up to that many jobs from the
#: QUEUED count, and a short clip that waits this long at the median is queueing there.
MAX_P50_S = 10.0


def kept_up(backlog: int, rate: float, latency: dict[str, float]) -> bool:
    """Whether a step or run kept up (jobs delivered within the step say less: at a low
    rate the latency alone pushes deliveries past its end)."""
    return backlog <= backlog_limit(rate) and latency.get("p50_ms", 0.0) <= MAX_P50_S * 1000


def backlog_at(run: Run, t_mono: float) -> int:
    t = t_mono - run.t0
    before = [s for s in run.samples if s["t"] <= t and "counts" in s]
    return before[-1]["counts"].get("QUEUED", 0) if before else 0


async def capacity_probe(run: Run, client: httpx.AsyncClient, n: int, clips: list[str]) -> dict:
    report.log(f"capacity probe: {n} jobs at once")
    start = time.monotonic()
    jobs = await send_jobs(run, client, "probe", None, n, clips)
    ok = await wait_delivered(run, jobs, timeout=max(600.0, n * 5.0))
    end = time.monotonic()
    delivered = run.first_delivery()
    arrivals = sorted(delivered[j.job_id] for j in jobs if j.job_id in delivered)
    lo, hi = arrivals[int(len(arrivals) * 0.2)], arrivals[int(len(arrivals) * 0.8) - 1]
    capacity = (int(len(arrivals) * 0.8) - 1 - int(len(arrivals) * 0.2)) / (hi - lo)
    run.phases.append({"name": "probe", "start": start - run.t0, "end": end - run.t0})
    stats = phase_stats(run, jobs, start, end)
    stats.update({"all_delivered": ok, "capacity_jobs_per_s": round(capacity, 3)})
    report.log(f"capacity probe: {capacity:.2f} jobs/s (load {loadavg()})")
    return stats


async def ramp(
    run: Run, client: httpx.AsyncClient, rates: list[float], seconds: float, clips: list[str]
) -> list[dict[str, Any]]:
    steps = []
    for rate in rates:
        count = max(1, round(rate * seconds))
        report.log(f"ramp step: {rate:.2f} jobs/s for {seconds:.0f} s ({count} jobs)")
        start = time.monotonic()
        jobs = await send_jobs(run, client, f"ramp-{rate:.2f}", rate, count, clips)
        end = time.monotonic()
        await asyncio.sleep(1.5)  # one more queue sample
        backlog = backlog_at(run, end)
        ok = await wait_delivered(run, jobs, timeout=max(300.0, backlog * 2.0))
        stats = phase_stats(run, jobs, start, end)  # latency of every job of the step
        sustained = kept_up(backlog, rate, stats["e2e_latency"])
        stats.update(
            {"rate": rate, "backlog_at_end": backlog, "sustained": sustained, "all_delivered": ok}
        )
        run.phases.append(
            {"name": f"ramp {rate:.2f}/s", "start": start - run.t0, "end": end - run.t0}
        )
        steps.append(stats)
        report.log(
            f"  completed {stats['completion_rate_per_s']}/s during the step, backlog "
            f"{backlog}, p50 {stats['e2e_latency'].get('p50_ms')} ms → "
            f"{'sustained' if sustained else 'NOT sustained'} (load {loadavg()})"
        )
        if not sustained and rate > rates[0]:
            break
    return steps


async def main_run(
    run: Run,
    client: httpx.AsyncClient,
    rate: float,
    minutes: float,
    drain_minutes: float,
    clips: list[str],
) -> dict[str, Any]:
    count = round(rate * minutes * 60)
    report.log(f"run: {rate} jobs/s for {minutes} min ({count} jobs), load {loadavg()}")
    model_url = run.services.servers["model-server"].url
    model_before = stack.metrics(model_url)
    transcriber_before = stack.metrics(run.services.servers["transcriber"].url)
    pids = {n: run.services.servers[n].pids() for n in stack.SERVICES}
    meter = measure.CpuMeter(pids, database_name(run.services.database_url))
    meter.start()
    start = time.monotonic()
    loads = [loadavg()]
    jobs = await send_jobs(run, client, "run", rate, count, clips)
    end = time.monotonic()
    loads.append(loadavg())
    report.log(f"run: enqueue done; backlog {backlog_at(run, end)}; draining")
    cpu_during = meter.stop()
    ok = await wait_delivered(run, jobs, timeout=drain_minutes * 60)
    drained = time.monotonic()
    loads.append(loadavg())
    run.phases.append({"name": "run", "start": start - run.t0, "end": end - run.t0})
    run.phases.append({"name": "drain", "start": end - run.t0, "end": drained - run.t0})
    stats = phase_stats(run, jobs, start, end)
    stats.update(
        {
            "rate": rate,
            "minutes": minutes,
            "all_delivered": ok,
            "drain_seconds": round(drained - end, 1),
            "backlog_at_end_of_enqueue": backlog_at(run, end),
            "loadavg_start_end_drained": loads,
            "cpu_during_enqueue_window": cpu_during,
            "model_server": stack.model_server_summary(
                stack.metrics_delta(model_before, stack.metrics(model_url))
            ),
            "transcriber_metrics_delta": {
                k: v
                for k, v in stack.metrics_delta(
                    transcriber_before, stack.metrics(run.services.servers["transcriber"].url)
                ).items()
                if v and not k.startswith(("process_", "python_"))
            },
        }
    )
    # Jobs delivered per minute of the run, and latency by minute of scheduling.
    delivered = run.first_delivery()
    per_minute = []
    for m in range(int(-(-(drained - start) // 60))):
        lo, hi = start + 60 * m, start + 60 * (m + 1)
        lat = [
            delivered[j.job_id] - j.scheduled
            for j in jobs
            if lo <= j.scheduled < hi and j.job_id in delivered
        ]
        done = sum(1 for j in jobs if j.job_id in delivered and lo <= delivered[j.job_id] < hi)
        per_minute.append(
            {"minute": m, "scheduled": sum(1 for j in jobs if lo <= j.scheduled < hi),
             "delivered": done, "latency_of_jobs_scheduled": measure.summarise_ms(lat)}
        )  # fmt: skip
    stats["per_minute"] = per_minute
    return stats


async def final_checks(run: Run) -> dict[str, Any]:
    """Every job SUCCEEDED, every webhook delivered once, signatures valid."""
    conn = await asyncpg.connect(asyncpg_dsn(run.services.database_url))
    try:
        statuses = {
            r["status"]: r["n"]
            for r in await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        }
        attempts = {
            r["attempts"]: r["n"]
            for r in await conn.fetch("SELECT attempts, count(*) AS n FROM jobs GROUP BY attempts")
        }
        transitions = {
            f"{r['from_status']}->{r['to_status']}{' ' + r['reason'] if r['reason'] else ''}": r[
                "n"
            ]
            for r in await conn.fetch(
                "SELECT from_status, to_status, reason, count(*) AS n FROM job_events "
                "GROUP BY from_status, to_status, reason ORDER BY n DESC"
            )
        }
        message_ids = {
            r["id"]: r["webhook_message_id"]
            for r in await conn.fetch("SELECT id, webhook_message_id FROM jobs")
        }
    finally:
        await conn.close()
    received = list(run.peers.receiver.deliveries)
    per_webhook_id = Counter(r.webhook_id for r in received)
    per_job = Counter(r.job_id for r in received)
    ids_per_job: dict[str, set[str]] = {}
    for r in received:
        ids_per_job.setdefault(r.job_id or "", set()).add(r.webhook_id)
    enqueued = [j for j in run.jobs if j.job_id]
    return {
        "jobs_enqueued": len(enqueued),
        "enqueue_errors": sum(1 for j in run.jobs if j.error),
        "enqueue_error_examples": [j.error for j in run.jobs if j.error][:5],
        "statuses": statuses,
        "all_succeeded": statuses.get("SUCCEEDED", 0) == len(enqueued) == sum(statuses.values()),
        "attempts": attempts,
        "transitions": transitions,
        "deliveries": len(received),
        "jobs_delivered": sum(1 for j in enqueued if per_job.get(j.job_id)),
        "duplicate_webhook_ids": sum(1 for n in per_webhook_id.values() if n > 1),
        "duplicate_deliveries": sum(n - 1 for n in per_webhook_id.values() if n > 1),
        "jobs_with_more_than_one_webhook_id": sum(1 for s in ids_per_job.values() if len(s) > 1),
        "deliveries_for_unknown_jobs": sum(1 for r in received if r.job_id not in run.by_id),
        "bad_signatures": sum(1 for r in received if not r.signature_ok),
        "webhook_id_matches_job": sum(
            1 for r in received if message_ids.get(r.job_id or "") == r.webhook_id
        ),
        "events_other_than_succeeded": sum(
            1 for r in received if r.type != "transcription.succeeded"
        ),
    }


def plot_statuses(
    ax: Any, run: Run, t_from: float, t_to: float, colours: dict[str, str]
) -> list[dict[str, Any]]:
    """Jobs by status over minutes from ``t_from``, a line for each status of ``colours``
    that occurs; returns the queue samples of the window."""
    samples = [s for s in run.samples if t_from <= s["t"] <= t_to and "counts" in s]
    ts = [(s["t"] - t_from) / 60 for s in samples]
    for status, colour in colours.items():
        values = [s["counts"].get(status, 0) for s in samples]
        if any(values):
            ax.plot(ts, values, label=status, color=colour, lw=1)
    ax.set_ylabel("jobs")
    return samples


def plot(run: Run, path: Path, title: str, t_from: float, t_to: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delivered = run.first_delivery()
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    colours = {"QUEUED": "tab:red", "TRIGGERED": "tab:orange", "PROCESSING": "tab:blue",
               "FAILED": "black", "SEND_FAILED": "tab:purple"}  # fmt: skip
    samples = plot_statuses(ax1, run, t_from, t_to, colours)
    ts = [(s["t"] - t_from) / 60 for s in samples]
    ax1.set_title("queue depth (jobs by status, sampled every second)")
    ax1.legend(loc="upper left")
    ax1b = ax1.twinx()
    ax1b.plot(ts, [s["load1"] for s in samples], color="grey", lw=0.7, ls=":", label="load 1m")
    ax1b.set_ylabel("load average (1 min)", color="grey")
    points = [
        ((delivered[j.job_id] - run.t0 - t_from) / 60, delivered[j.job_id] - j.scheduled)
        for j in run.jobs
        if j.job_id in delivered and t_from <= delivered[j.job_id] - run.t0 <= t_to
    ]
    if points:
        xs, ys = zip(*sorted(points), strict=True)
        ax2.scatter(xs, ys, s=2, alpha=0.4, label="a job's latency")
        window: list[tuple[float, float]] = []
        p50, p99, xw = [], [], []
        for x in sorted({round(x * 6) / 6 for x in xs}):  # every 10 s
            window = [(a, b) for a, b in points if x - 1 / 6 < a <= x]
            if window:
                lat = sorted(b for _, b in window)
                xw.append(x)
                p50.append(measure.percentile(lat, 50))
                p99.append(measure.percentile(lat, 99))
        ax2.plot(xw, p50, color="tab:green", label="p50 (10 s)")
        ax2.plot(xw, p99, color="tab:red", label="p99 (10 s)")
        ax2.set_yscale("log")
        ax2.legend(loc="upper left")
    ax2.set_ylabel("seconds")
    ax2.set_title("end-to-end latency (scheduled enqueue → webhook), by arrival")
    bins = int((t_to - t_from) // 10) + 1
    enq = [0] * bins
    done = [0] * bins
    for j in run.jobs:
        t = j.scheduled - run.t0 - t_from
        if 0 <= t <= t_to - t_from:
            enq[int(t // 10)] += 1
        if j.job_id in delivered:
            t = delivered[j.job_id] - run.t0 - t_from
            if 0 <= t <= t_to - t_from:
                done[int(t // 10)] += 1
    xb = [(i * 10 + 5) / 60 for i in range(bins)]
    ax3.plot(xb, [e / 10 for e in enq], label="enqueued /s", color="tab:blue")
    ax3.plot(xb, [d / 10 for d in done], label="delivered /s", color="tab:green")
    ax3.set_ylabel("jobs per second (10 s bins)")
    ax3.set_xlabel("minutes")
    ax3.legend(loc="upper left")
    for phase in run.phases:
        if phase["end"] < t_from or phase["start"] > t_to:
            continue
        for ax in (ax1, ax2, ax3):
            ax.axvline((phase["start"] - t_from) / 60, color="grey", lw=0.5, ls="--")
        ax3.text((phase["start"] - t_from) / 60, ax3.get_ylim()[1] * 0.95, phase["name"],
                 fontsize=7, rotation=90, va="top")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def bench(args: argparse.Namespace, settings: dict[str, str], url: str) -> dict[str, Any]:
    clips = [c for c in args.clips.split(",") if c]
    result: dict[str, Any] = {}
    log_dir = report.TMP / "sustained-logs"
    all_env = {name: dict(settings) for name in stack.SERVICES}
    with stack.Peers(DATA) as peers:
        with stack.running_services(url, all_env, log_dir) as services:
            run = Run(services, peers)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_queue(run, stop))
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                warm = await send_jobs(run, client, "warm-up", None, 4, clips)
                await wait_delivered(run, warm, 120)
                if args.probe_jobs:
                    result["probe"] = await capacity_probe(run, client, args.probe_jobs, clips)
                if not args.probe_only and not args.no_ramp:
                    if args.ramp_rates:
                        rates = [float(r) for r in args.ramp_rates.split(",")]
                    else:
                        capacity = result["probe"]["capacity_jobs_per_s"]
                        rates = [round(f * capacity, 2) for f in (0.6, 0.8, 1.0, 1.2)]
                    ramp_start = time.monotonic() - run.t0
                    result["ramp"] = await ramp(run, client, rates, args.step_seconds, clips)
                    sustained = [s["rate"] for s in result["ramp"] if s["sustained"]]
                    result["max_sustainable_rate_per_s"] = max(sustained, default=None)
                    result["ramp_window"] = (ramp_start, time.monotonic() - run.t0)
                if not args.probe_only and args.minutes > 0:
                    if args.rate == "sustainable":
                        rate = result.get("max_sustainable_rate_per_s") or round(
                            0.6 * result["probe"]["capacity_jobs_per_s"], 2
                        )
                    else:
                        rate = float(args.rate)
                    run_start = time.monotonic() - run.t0
                    result["run"] = await main_run(
                        run, client, rate, args.minutes, args.drain_minutes, clips
                    )
                    result["run_window"] = (run_start, time.monotonic() - run.t0)
            await asyncio.sleep(2.0)
            stop.set()
            await sampler
            for attempt in range(60):  # PostgreSQL may be restarting (others' drills)
                try:
                    result["checks"] = await final_checks(run)
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    if attempt == 59:
                        raise
                    await asyncio.sleep(2.0)
            result["samples"] = run.samples
            result["jobs"] = run.job_records()
            result["phases"] = run.phases
            result["_run"] = run
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate",
        default="10",
        help="jobs per second in the run, or 'sustainable': the ramp's highest sustained step",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument("--drain-minutes", type=float, default=60.0)
    parser.add_argument("--clips", default="hotwords.mp3,jfk.flac")
    parser.add_argument("--probe-jobs", type=int, default=200)
    parser.add_argument("--probe-only", action="store_true")
    parser.add_argument("--no-ramp", action="store_true")
    parser.add_argument("--ramp-rates", default="", help="e.g. 1,2,3 (default: from the probe)")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--name", default="sustained", help="result file name prefix")
    parser.add_argument("--report-only", type=Path, help="re-render the .md of a results JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        rerender(args.report_only, args.out, args.name)
        return
    threads = len(os.sched_getaffinity(0))
    settings = default_settings(threads)
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name.strip().upper()] = value.strip()
    info = report.machine()
    report.log(f"settings {settings}; load {loadavg()}")
    with scratch_database("bench_sustained") as url:
        result = asyncio.run(bench(args, settings, url))
    run: Run = result.pop("_run")
    result.update(
        {
            "machine": info,
            "loadavg_at_end": loadavg(),
            "settings": settings,
            "args": {k: v for k, v in vars(args).items() if k != "out"},
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    pngs = []
    if "run_window" in result:
        path = args.out / f"{args.name}-{day}.png"
        plot(run, path, f"{result['run']['rate']:g} jobs/s for {args.minutes:g} min, then drain "
             f"({info['nproc']} cores; load {result['run']['loadavg_start_end_drained']})",
             *result["run_window"])  # fmt: skip
        pngs.append(path)
    if "ramp_window" in result:
        path = args.out / f"{args.name}-ramp-{day}.png"
        start = result["phases"][0]["start"] if result["phases"] else result["ramp_window"][0]
        plot(run, path, "capacity probe and ramp", start, result["ramp_window"][1])
        pngs.append(path)
    write_report(result, args.out, args.name, pngs)


def rerender(path: Path, out: Path, name: str) -> None:
    """The .md of an earlier JSON, its steps judged again by ``backlog_limit``."""
    result = json.loads(path.read_text())
    for step in result.get("ramp", []):
        step["sustained"] = kept_up(step["backlog_at_end"], step["rate"], step["e2e_latency"])
    if "ramp" in result:
        ok = [s["rate"] for s in result["ramp"] if s["sustained"]]
        result["max_sustainable_rate_per_s"] = max(ok, default=None)
    day = path.stem.rsplit("-", 3)[-3:]
    pngs = [out / f"{name}-{'-'.join(day)}.png", out / f"{name}-ramp-{'-'.join(day)}.png"]
    write_report(result, out, name, [p for p in pngs if p.is_file()])


def _others(result: dict[str, Any]) -> str:
    """What other processes on the machine took during the run's enqueue window."""
    other = (result.get("run", {}).get("cpu_during_enqueue_window", {}).get("cores_busy", {})).get(
        "other"
    )
    if other is None:
        return "other processes' CPU not measured"
    if other > 0.2:
        return f"**the machine was shared**: others used {other:.2f} cores during the run"
    return f"others used {other:.2f} cores during the run"


def write_report(result: dict[str, Any], out: Path, name: str, pngs: list[Path]) -> None:
    info = result["machine"]
    checks = result["checks"]
    lines = [
        "# Sustained load through the whole service",
        "",
        report.machine_markdown(info),
        f"- load average (1, 5, 15 min) at start {info['loadavg_at_start']}, at end "
        f"{result['loadavg_at_end']}; {_others(result)} (load per second in the JSON "
        "samples and on the plot)",
        f"- settings: {', '.join(f'{k}={v}' for k, v in result['settings'].items())}",
        f"- clips: {result['args']['clips']} (alternating), language en",
        "",
    ]
    if "probe" in result:
        p = result["probe"]
        lines += [
            f"**Capacity probe** ({p['jobs']} jobs at once): **{p['capacity_jobs_per_s']:.2f} "
            f"jobs/s** ({p['capacity_jobs_per_s'] * 60:.0f} a minute); latency p50 "
            f"{p['e2e_latency'].get('p50_ms', 0) / 1000:.1f} s, max "
            f"{p['e2e_latency'].get('max_ms', 0) / 1000:.1f} s.",
            "",
        ]
    if "ramp" in result:
        lines += [
            "**Ramp** (open loop):",
            "",
            "| rate /s | delivered /s during step | backlog at end | p50 s | p99 s | sustained |",
            "| ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for s in result["ramp"]:
            lat = s["e2e_latency"]
            lines.append(
                f"| {s['rate']:.2f} | {s['completion_rate_per_s']:.2f} | {s['backlog_at_end']} | "
                f"{lat.get('p50_ms', 0) / 1000:.2f} | {lat.get('p99_ms', 0) / 1000:.2f} | "
                f"{'yes' if s['sustained'] else 'no'} |"
            )
        best = result.get("max_sustainable_rate_per_s")
        lines += [
            "",
            f"Maximum sustainable rate: **{best if best is not None else 'none of the steps'}"
            f" jobs/s**" + (f" ({best * 60:.0f} a minute)" if best else "") + ".",
            "",
        ]
    if "run" in result:
        r = result["run"]
        lat = r["e2e_latency"]
        met = (
            kept_up(r["backlog_at_end_of_enqueue"], r["rate"], r["e2e_latency"])
            and r["all_delivered"]
        )
        lines += [
            f"**Run**: {r['rate']:g} jobs/s ({r['rate'] * 60:.0f} a minute) for "
            f"{r['minutes']:g} min = {r['jobs']} jobs. Delivered during the enqueue window "
            f"{r['completion_rate_per_s']:.2f} jobs/s; backlog (QUEUED) when enqueueing "
            f"stopped: {r['backlog_at_end_of_enqueue']}; drained in {r['drain_seconds']:.0f} s "
            f"(all delivered: {r['all_delivered']}). Sustained at {r['rate']:g}/s: "
            f"**{report.met(met)}**.",
            f"End-to-end latency (scheduled enqueue → webhook): p50 "
            f"{lat.get('p50_ms', 0) / 1000:.2f} s, p90 {lat.get('p90_ms', 0) / 1000:.2f} s, "
            f"p99 {lat.get('p99_ms', 0) / 1000:.2f} s, max {lat.get('max_ms', 0) / 1000:.2f} s. "
            f"Enqueue (POST) p99 {r['enqueue_latency'].get('p99_ms', 0):.0f} ms.",
            f"Model server: {r['model_server']['batches']} batches, mean batch "
            f"{r['model_server']['mean_batch_size']}, "
            f"{r['model_server']['audio_seconds_per_compute_second']} audio s per compute s; "
            f"load average start / end of enqueue / drained: "
            f"{' / '.join(r['loadavg_start_end_drained'])}.",
            "CPU cores busy during the enqueue window: "
            f"{r['cpu_during_enqueue_window']['cores_busy']}",
            "",
            "| minute | scheduled | delivered | p50 s (jobs scheduled that minute) | p99 s |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for m in r["per_minute"]:
            ml = m["latency_of_jobs_scheduled"]
            lines.append(
                f"| {m['minute']} | {m['scheduled']} | {m['delivered']} | "
                f"{ml.get('p50_ms', 0) / 1000:.1f} | {ml.get('p99_ms', 0) / 1000:.1f} |"
            )
        lines.append("")
    lines += [
        "**Checks** (every job of every phase):",
        "",
        f"- jobs enqueued {checks['jobs_enqueued']} (enqueue errors {checks['enqueue_errors']});"
        f" statuses {checks['statuses']}: all SUCCEEDED **{checks['all_succeeded']}**",
        f"- deliveries {checks['deliveries']}, jobs delivered {checks['jobs_delivered']}, "
        f"duplicate webhook-ids {checks['duplicate_webhook_ids']} "
        f"({checks['duplicate_deliveries']} extra deliveries), jobs with more than one "
        f"webhook-id {checks['jobs_with_more_than_one_webhook_id']}, bad signatures "
        f"{checks['bad_signatures']}, webhook-id = the job's stored message id "
        f"{checks['webhook_id_matches_job']} / {checks['deliveries']}",
        f"- attempts per job {checks['attempts']}; transitions {checks['transitions']}",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    print("\n".join(lines))
    report.write(out, name, result, "\n".join(lines), also=pngs)
