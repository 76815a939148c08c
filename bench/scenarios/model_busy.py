"""The service at twice what its model server can do, for five minutes: every job must end
SUCCEEDED on its first attempt, none failed.

    .venv/bin/python -m bench model-busy                   # probe, 5 min at 2 x, drain
    .venv/bin/python -m bench model-busy --minutes 1 --probe-jobs 8   # a quick look

The four services run as processes (``transcription serve ...``) on a scratch PostgreSQL
database with tiny.en (int8, CPU), the media server and webhook receiver on loopback in
this process (``bench.stack``). The model server's queue is small and the
transcriber sends more than it holds: ``MAX_BATCH_SIZE=4``, ``MAX_QUEUED_CHUNKS=4`` (so at
most 8 chunks are at the model server, 4 decoding and 4 waiting; one more is answered 503
"queue full"), against ``MAX_CONCURRENT_TRANSCRIPTION_JOBS=8``, ``WORKER_MAX_JOBS=8``,
``CHUNK_CONCURRENCY=16`` (8 jobs of 3 chunks: 24 chunks wanting to be sent). Before the
model client waited out a full queue, that configuration failed jobs with MODEL_ERROR.

**The recording**: ``jfk.flac`` (11 s) 6 times with 0.8 s pauses, 16 kHz mono FLAC (69 s,
3 chunks), made in a temporary folder; every job is that file, ``language="en"``.

1. **Capacity probe**: ``--probe-jobs`` (16) jobs at once; the rate of webhooks between
   the 20th and 80th percentile of their arrivals is the service's capacity in jobs per
   second. The model server's CPU is what limits it (``sustained``: the rest of the
   service takes about a tenth of a core), so this is what the model server can do.
2. **The run**: ``--factor`` (2) x that capacity, open loop (job ``i`` sent at ``start +
   i / rate`` whatever happens), for ``--minutes`` (5); then the backlog drains.

Measured: every job's latency from its *scheduled* enqueue to its webhook; jobs by status
every second (from the database); every 2 s from the services' ``/metrics``: the model
server's 503s (``transcription_model_rejected_chunks_total``) and queue, the transcriber's
queue-full answers, time chunks waited for model capacity, its window and chunks in
flight. At the end, ``sustained.final_checks``: every job SUCCEEDED, attempts, one signed
webhook each. CPU by process group during the run, other processes' included.

Results: ``bench/results/model-busy-<date>.json``, ``.md`` and ``.png`` (latency, queue,
503s and waiting over time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import measure, report, stack
from bench.database import scratch_database
from bench.scenarios import sustained
from bench.speech import SAMPLE_RATE, write_audio
from testkit.data import DATA
from testkit.machine import loadavg

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--minutes", "0.25", "--probe-jobs", "4", "--drain-minutes", "5"]

RECORDING = "jfk-x6.flac"
SETTINGS = {
    "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "8",
    "WORKER_MAX_JOBS": "8",
    "CHUNK_CONCURRENCY": "16",
    "MAX_BATCH_SIZE": "4",
    "MAX_QUEUED_CHUNKS": "4",
    "BATCH_WAIT_MS": "10",
    "MODEL": "tiny.en",
    "MODEL_DEVICE": "cpu",
    "MODEL_COMPUTE_TYPE": "int8",
}
#: Metrics sampled from each service, by the name of the series in the results.
MODEL_SERVER_SERIES = {
    "rejected": "transcription_model_rejected_chunks_total",
    "queued": "transcription_model_queued_chunks",
}
TRANSCRIBER_SERIES = {
    "busy_503": "transcription_model_busy_answers_total{status=503}",
    "busy_429": "transcription_model_busy_answers_total{status=429}",
    "wait_sum": "transcription_model_capacity_wait_seconds_sum",
    "wait_count": "transcription_model_capacity_wait_seconds_count",
    "window": "transcription_model_window",
    "in_flight": "transcription_model_chunks_in_flight",
    "saturated": "transcription_model_saturated",
    "model_errors": "transcription_model_errors_total",
}


def make_recording(folder: Path) -> Path:
    from faster_whisper import decode_audio

    jfk = decode_audio(str(DATA / "jfk.flac")).astype(np.float32)
    pause = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    samples = np.concatenate([part for _ in range(6) for part in (jfk, pause)])
    return write_audio(samples, folder / RECORDING)


async def sample_metrics(
    run: sustained.Run, samples: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    servers = run.services.servers
    while not stop.is_set():
        t = time.monotonic() - run.t0
        try:
            model, worker = await asyncio.gather(
                asyncio.to_thread(stack.metrics, servers["model-server"].url),
                asyncio.to_thread(stack.metrics, servers["transcriber"].url),
            )
        except httpx.HTTPError as exc:
            samples.append({"t": round(t, 2), "error": repr(exc)[:200]})
        else:
            sample: dict[str, Any] = {"t": round(t, 2)}
            sample.update({k: model.get(v, 0.0) for k, v in MODEL_SERVER_SERIES.items()})
            sample.update({k: worker.get(v, 0.0) for k, v in TRANSCRIBER_SERIES.items()})
            samples.append(sample)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def bench(args: argparse.Namespace, url: str, media: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    log_dir = report.TMP / "model-busy-logs"
    settings = {**SETTINGS, "MODEL_CPU_THREADS": str(len(os.sched_getaffinity(0)))}
    with stack.Peers(media) as peers:
        env = {name: dict(settings) for name in stack.SERVICES}
        with stack.running_services(url, env, log_dir) as services:
            run = sustained.Run(services, peers)
            stop = asyncio.Event()
            metric_samples: list[dict[str, Any]] = []
            tasks = [
                asyncio.create_task(sustained.sample_queue(run, stop)),
                asyncio.create_task(sample_metrics(run, metric_samples, stop)),
            ]
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                warm = await sustained.send_jobs(run, client, "warm-up", None, 2, [RECORDING])
                await sustained.wait_delivered(run, warm, 300)
                result["probe"] = await sustained.capacity_probe(
                    run, client, args.probe_jobs, [RECORDING]
                )
                capacity = result["probe"]["capacity_jobs_per_s"]
                rate = round(args.factor * capacity, 3)
                run_start = time.monotonic()
                result["run"] = await sustained.main_run(
                    run, client, rate, args.minutes, args.drain_minutes, [RECORDING]
                )
                result["run_window"] = (run_start - run.t0, time.monotonic() - run.t0)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            result["checks"] = await sustained.final_checks(run)
            result["queue_samples"] = run.samples
            result["metric_samples"] = metric_samples
            result["jobs"] = run.job_records()
            result["phases"] = run.phases
            result["_run"] = run
    result["settings"] = settings
    return result


def over_time(result: dict[str, Any], step: float = 30.0) -> list[dict[str, Any]]:
    """The run and its drain in ``step`` s slices: jobs delivered and their latency, 503s
    answered, queue-full answers received, mean wait of the chunks done in the slice."""
    t0, t1 = result["run_window"]
    samples = [s for s in result["metric_samples"] if "error" not in s]
    jobs = [j for j in result["jobs"] if j["phase"] == "run" and j["latency_s"] is not None]
    rows = []
    start = t0
    while start < t1:
        end = start + step
        inside = [s for s in samples if start <= s["t"] < end]
        before = [s for s in samples if s["t"] < start]
        first = before[-1] if before else (inside[0] if inside else None)
        last = inside[-1] if inside else None
        done = sorted(
            j["latency_s"] for j in jobs if start <= j["scheduled_s"] + j["latency_s"] < end
        )

        def delta(key: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
            return (b[key] - a[key]) if a and b else 0.0

        chunks = delta("wait_count", first, last)
        waited = delta("wait_sum", first, last)
        busy = delta("busy_503", first, last) + delta("busy_429", first, last)
        rows.append(
            {
                "from_s": round(start - t0),
                "delivered": len(done),
                "latency_p50_s": round(measure.percentile(done, 50), 1) if done else None,
                "latency_max_s": round(done[-1], 1) if done else None,
                "rejected_503": int(delta("rejected", first, last)),
                "busy_answers": int(busy),
                "chunks": int(chunks),
                "mean_wait_s": round(waited / chunks, 2) if chunks else None,
                "window_min": min((s["window"] for s in inside), default=None),
                "window_max": max((s["window"] for s in inside), default=None),
                "model_queue_max": max((s["queued"] for s in inside), default=None),
            }
        )
        start = end
    return rows


def plot(result: dict[str, Any], run: sustained.Run, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0, t1 = result["run_window"]
    fig, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    queue, latency, refusals, waits = axes
    colours = {"QUEUED": "tab:red", "PROCESSING": "tab:blue", "TRIGGERED": "tab:orange",
               "FAILED": "black", "PERMAFAILED": "tab:purple"}  # fmt: skip
    sustained.plot_statuses(queue, run, t0, t1, colours)
    queue.set_title("jobs by status (every second)")
    queue.legend(loc="upper left")
    jobs = [j for j in result["jobs"] if j["latency_s"] is not None and j["phase"] == "run"]
    xs = [(j["scheduled_s"] + j["latency_s"] - t0) / 60 for j in jobs]
    latency.scatter(xs, [j["latency_s"] for j in jobs], s=3, alpha=0.5)
    latency.set_ylabel("seconds")
    latency.set_title("each job's latency (scheduled enqueue → webhook), by arrival")
    metric = [s for s in result["metric_samples"] if "error" not in s and t0 <= s["t"] <= t1]
    mt = [(s["t"] - t0) / 60 for s in metric]
    pairs = list(itertools.pairwise(metric))
    mid = [((a["t"] + b["t"]) / 2 - t0) / 60 for a, b in pairs]
    refusals.plot(mid, [(b["rejected"] - a["rejected"]) / (b["t"] - a["t"]) for a, b in pairs],
                  label="503 queue full answered / s", color="tab:red", lw=0.8)  # fmt: skip
    refusals.set_ylabel("per second")
    refusals.legend(loc="upper left")
    window = refusals.twinx()
    window.plot(mt, [s["window"] for s in metric], color="tab:green", lw=1, label="window")
    window.plot(mt, [s["in_flight"] for s in metric], color="grey", lw=0.6, label="in flight")
    window.set_ylabel("chunks (transcriber)")
    window.legend(loc="upper right")
    refusals.set_title("the model server's 503s, and the transcriber's window (AIMD)")
    mean_wait = [
        (b["wait_sum"] - a["wait_sum"]) / (b["wait_count"] - a["wait_count"])
        if b["wait_count"] > a["wait_count"]
        else float("nan")
        for a, b in pairs
    ]
    waits.plot(mid, mean_wait, color="tab:purple", lw=0.8, label="mean wait of chunks done")
    waits.set_ylabel("seconds")
    waits.set_xlabel("minutes from the start of the run")
    waits.legend(loc="upper left")
    waits.set_title("time a chunk waited for model capacity (window and queue-full pauses)")
    for ax in axes:
        ax.axvline((result["run_window"][0] + result["run"]["minutes"] * 60 - t0) / 60,
                   color="grey", lw=0.5, ls="--")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path, png: Path) -> None:
    info, checks, r, p = result["machine"], result["checks"], result["run"], result["probe"]
    cpu = r["cpu_during_enqueue_window"]
    lat = r["e2e_latency"]
    failed = {k: v for k, v in checks["statuses"].items() if k != "SUCCEEDED"}
    transcriber = r["transcriber_metrics_delta"]
    busy = sum(v for k, v in transcriber.items() if k.startswith("transcription_model_busy"))
    waited = transcriber.get("transcription_model_capacity_wait_seconds_sum", 0.0)
    chunks = transcriber.get("transcription_model_capacity_wait_seconds_count", 0.0)
    errors = transcriber.get("transcription_model_errors_total", 0.0)
    ok = checks["all_succeeded"] and set(checks["attempts"]) == {1}
    lines = [
        "# The service at twice its model server's capacity",
        "",
        report.machine_markdown(info),
        f"- load average at start {info['loadavg_at_start']}, at end {result['loadavg_at_end']};"
        f" CPU cores busy during the run: {cpu['cores_busy']} (`other`: processes outside "
        "the benchmark)",
        f"- settings: {', '.join(f'{k}={v}' for k, v in result['settings'].items())}",
        f"- every job: {RECORDING} (jfk.flac 6 times, 69 s, 3 chunks), language en",
        "",
        f"**Capacity** ({p['jobs']} jobs at once): {p['capacity_jobs_per_s']:.3f} jobs/s. "
        f"**The run**: {r['rate']:g} jobs/s ({result['args']['factor']:g} x) for "
        f"{r['minutes']:g} min = {r['jobs']} jobs; backlog when sending stopped "
        f"{r['backlog_at_end_of_enqueue']} QUEUED; drained {r['drain_seconds']:.0f} s later.",
        "",
        f"- **Every job SUCCEEDED on its first attempt: {report.met(ok)}.** Statuses "
        f"{checks['statuses']} (not SUCCEEDED: {failed or 'none'}); attempts per job "
        f"{checks['attempts']}; one webhook per job ({checks['jobs_delivered']} delivered, "
        f"{checks['duplicate_deliveries']} duplicates, {checks['bad_signatures']} bad "
        "signatures).",
        f"- The model server answered **{r['model_server']['rejected_chunks']} times 503 "
        f"queue full** during the run and drain; the transcriber received {busy:.0f} "
        f"queue-full answers and counted {errors:.0f} model errors.",
        f"- Chunks waited for model capacity {waited:.0f} s in all, "
        f"{waited / chunks if chunks else 0:.2f} s per chunk on average ({chunks:.0f} chunks).",
        f"- Latency (scheduled enqueue → webhook): p50 {lat.get('p50_ms', 0) / 1000:.1f} s, "
        f"p90 {lat.get('p90_ms', 0) / 1000:.1f} s, max {lat.get('max_ms', 0) / 1000:.1f} s: "
        "at twice the capacity the backlog, and with it the latency, grows for as long as "
        "the overload lasts, then drains.",
        f"- Model server: {r['model_server']['batches']} batches, mean batch "
        f"{r['model_server']['mean_batch_size']}, "
        f"{r['model_server']['audio_seconds_per_compute_second']} audio s per compute s.",
        "",
        "Over time (30 s slices from the start of the run; *delivered* and latency by when "
        "the webhook arrived):",
        "",
        "| from s | delivered | latency p50 s | max s | 503s answered | queue-full "
        "answers | chunks done | mean wait s | window | model queue max |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in result["over_time"]:
        window = (
            f"{row['window_min']:.0f}-{row['window_max']:.0f}"
            if row["window_min"] is not None
            else ""
        )
        cells = [row[k] for k in ("from_s", "delivered", "latency_p50_s", "latency_max_s")]
        cells += [row[k] for k in ("rejected_503", "busy_answers", "chunks", "mean_wait_s")]
        cells += [window, row["model_queue_max"]]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    lines += ["", f"Transitions: {checks['transitions']}", "", f"![{png.stem}]({png.name})"]
    print("\n".join(lines))
    report.write(out, args_name(result), result, "\n".join(lines), also=[png])


def args_name(result: dict[str, Any]) -> str:
    return str(result["args"]["name"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=float, default=2.0, help="x the probed capacity")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--drain-minutes", type=float, default=30.0)
    parser.add_argument("--probe-jobs", type=int, default=16)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--name", default="model-busy")
    args = parser.parse_args(argv)
    info = report.machine()
    with tempfile.TemporaryDirectory(prefix="model-busy-") as tmp:
        media = make_recording(Path(tmp))
        report.log(f"recording {media.name}; load {loadavg()}")
        with scratch_database("bench_model_busy") as url:
            result = asyncio.run(bench(args, url, media.parent))
    run: sustained.Run = result.pop("_run")
    result.update(
        {
            "machine": info,
            "loadavg_at_end": loadavg(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }
    )
    result["over_time"] = over_time(result)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.name}-{time.strftime('%Y-%m-%d', time.gmtime())}.png"
    others = result["run"]["cpu_during_enqueue_window"]["cores_busy"].get("other", 0.0)
    title = (
        f"{result['run']['rate']:g} jobs/s ({args.factor:g} x capacity) for {args.minutes:g} "
        f"min, then drain; {info['nproc']} cores, other processes {others:.2f} cores"
    )
    plot(result, run, png, title)
    write_report(result, args.out, png)
