"""Peak resident memory of the model server given a 10-hour FLAC.

    .venv/bin/python -m bench model-server-memory          # or: make bench-model-memory
    .venv/bin/python -m bench model-server-memory --hours 1 --out bench/results/tmp  # quick

Before the bounded decoder, a 20 MB FLAC of 10 hours of silence took the model server to
5.7 GB of RSS before its 413: faster-whisper's ``decode_audio`` decodes the whole file
first, whatever it declares.

**Media** (made with PyAV in memory; never written to the repository): ``--hours`` (10) of
digital silence as 44.1 kHz stereo FLAC, in three versions of its STREAMINFO header: the
true length; no length (total samples 0, as a streaming encoder leaves it); and a lie of
``--lie-hours`` (1), less than it holds, so the first pass keeps that much before it
finds out.

**The server**: ``transcription serve model-server`` as its own process, tiny.en int8 on
the CPU, every limit at its default (``MAX_FILE_SECONDS`` 4 h, ``MAX_CHUNK_SECONDS``
600 s, ``MAX_UPLOAD_BYTES`` 200 MiB), warmed up with one transcription of jfk.flac
(model and VAD loaded). Then, for each file, on ``/v1/audio/transcriptions`` (multipart)
and on ``/v1/predict`` (``audio/flac``): the server's peak RSS is reset
(``/proc/<pid>/clear_refs`` <- 5), one request is sent, and the peak (``VmHWM``) read
back, with the answer, the wall time and the server's CPU seconds.

Last, ``--accept-minutes`` (30) of silence within the limit is transcribed through
``/v1/audio/transcriptions``: what an accepted file costs (its audio, and the VAD over all
of it).

Target: peak < 400 MB for the 10-hour FLAC, declaring its length or none, on both
endpoints. The file that lies is reported, not judged: it is held up to what it declares,
as a genuine file of that length would be (and as one may send). Results:
``bench/results/<name>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import measure, report
from testkit.machine import loadavg
from testkit.media import JFK, declare_flac_samples, silent_flac
from testkit.procs import model_server

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--hours", "0.25", "--lie-hours", "0.1", "--accept-minutes", "0.5", "--quiet-wait", "0"]


TARGET_MB = 400.0
MIB = 1 << 20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--lie-hours", type=float, default=1.0)
    parser.add_argument(
        "--accept-minutes",
        type=float,
        default=30.0,
        help="last, a file within the limit, transcribed: what accepted audio costs (0: none)",
    )
    parser.add_argument("--name", default="model-server-memory")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="where the results go")
    parser.add_argument("--quiet-wait", type=float, default=20.0)
    parser.add_argument(
        "--only-true-length",
        action="store_true",
        help="only the file that declares its true length (for a run of older code, which "
        "decodes all of every file)",
    )
    args = parser.parse_args(argv)
    seconds = args.hours * 3600
    started = time.perf_counter()
    honest = silent_flac(seconds, sample_rate=44_100, layout="stereo")
    report.log(f"made {args.hours:g} h of FLAC: {len(honest) / MIB:.1f} MiB")
    files = {
        f"declares {args.hours:g} h": honest,
        "declares no length": _declare(honest, 0),
        f"declares {args.lie_hours:g} h (a lie)": _declare(honest, args.lie_hours * 3600),
    }
    if args.only_true_length:
        files = dict(list(files.items())[:1])
    made_s = time.perf_counter() - started

    machine = report.machine(postgres=False)
    results: list[dict[str, Any]] = []
    settings = {
        "LOG_LEVEL": "WARNING",
        "MODEL": "tiny.en",
        "MODEL_DEVICE": "cpu",
        "MODEL_COMPUTE_TYPE": "int8",
    }
    with tempfile.TemporaryDirectory() as tmp:
        with model_server(Path(tmp) / "model-server.log", **settings) as server:
            pid = server.pid
            with httpx.Client(base_url=server.url, timeout=600) as client:
                warm = _measure(client, pid, "/v1/audio/transcriptions", JFK.read_bytes())
                report.log(f"warm-up (jfk.flac): {warm['status']}, peak {warm['peak_rss_mb']} MB")
                results.append({"file": "jfk.flac (warm-up)", **warm})
                for label, data in files.items():
                    for endpoint in ("/v1/audio/transcriptions", "/v1/predict"):
                        quiet = measure.wait_for_quiet(args.quiet_wait)
                        out = _measure(client, pid, endpoint, data)
                        out["machine_busy_before_cores"] = quiet
                        report.log(
                            f"{label} -> {endpoint}: {out['status']}, peak "
                            f"{out['peak_rss_mb']} MB, {out['server_cpu_s']} s CPU"
                        )
                        results.append({"file": label, "bytes": len(data), **out})
                if args.accept_minutes and not args.only_true_length:
                    label = f"{args.accept_minutes:g} min, within the limit (transcribed)"
                    data = silent_flac(
                        args.accept_minutes * 60, sample_rate=44_100, layout="stereo"
                    )
                    measure.wait_for_quiet(args.quiet_wait)
                    out = _measure(client, pid, "/v1/audio/transcriptions", data)
                    report.log(f"{label}: {out['status']}, peak {out['peak_rss_mb']} MB")
                    results.append({"file": label, "bytes": len(data), **out})

    result = {
        "machine": machine,
        "code": (
            f"snapshot of commit {snapshot}"
            if (snapshot := machine["code"]["snapshot_commit"])
            else "the working tree"
        ),
        "hours": args.hours,
        "media_made_seconds": round(made_s, 1),
        "target_mb": TARGET_MB,
        "results": results,
    }
    write_report(result, args.out, args.name)


def _declare(flac: bytes, seconds: float) -> bytes:
    return declare_flac_samples(flac, round(seconds * 44_100))


def _measure(client: httpx.Client, pid: int, endpoint: str, data: bytes) -> dict[str, Any]:
    base = measure.rss_kib(pid)
    measure.reset_peak_rss(pid)
    cpu0 = measure.cpu_seconds(pid)
    meter = measure.CpuMeter(groups={"model-server": {pid}})
    meter.start()
    started = time.perf_counter()
    if endpoint == "/v1/predict":
        response = client.post(endpoint, content=data, headers={"content-type": "audio/flac"})
    else:
        response = client.post(
            endpoint, files={"file": ("media.flac", data)}, data={"model": "whisper-1"}
        )
    wall = time.perf_counter() - started
    cpu = meter.stop()
    detail = response.json().get("detail") if response.status_code >= 400 else None
    return {
        "endpoint": endpoint,
        "status": response.status_code,
        "detail": detail,
        "wall_seconds": round(wall, 2),
        "server_cpu_s": round(measure.cpu_seconds(pid) - cpu0, 2),
        "other_cores": cpu["cores_busy"].get("other", 0.0),
        "baseline_rss_mb": round(base / 1024, 1),
        "peak_rss_mb": round(measure.rss_kib(pid, "VmHWM") / 1024, 1),
        "loadavg": loadavg(),
    }


def write_report(result: dict[str, Any], out: Path, name: str) -> None:
    rows = result["results"]
    hours = result["hours"]
    judged = [r for r in rows if r["file"] in (f"declares {hours:g} h", "declares no length")]
    worst = max(r["peak_rss_mb"] for r in judged)
    lines = [
        f"# The model server's peak RSS given a {hours:g}-hour FLAC",
        "",
        "`python -m bench model-server-memory`: one `transcription serve model-server` process "
        "(tiny.en int8, CPU, default limits: `MAX_FILE_SECONDS` 4 h, `MAX_CHUNK_SECONDS` "
        "600 s); `VmHWM` of that process reset before each request and read after it. "
        "MB = MiB. Media: digital silence, 44.1 kHz stereo FLAC.",
        "",
        f"**Target: peak < {TARGET_MB:.0f} MB for the {hours:g}-hour FLAC: "
        f"{report.met(worst < TARGET_MB)}** (worst {worst} MB).",
        "",
        "| file | size MiB | endpoint | answer | peak RSS MB | RSS before MB | "
        "server CPU s | wall s | other cores |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        answer = str(r["status"]) + (f": {r['detail']}" if r.get("detail") else "")
        size = f"{r['bytes'] / MIB:.1f}" if "bytes" in r else ""
        lines.append(
            f"| {r['file']} | {size} | `{r['endpoint']}` | {answer} | {r['peak_rss_mb']} | "
            f"{r['baseline_rss_mb']} | {r['server_cpu_s']} | {r['wall_seconds']} | "
            f"{r['other_cores']} |"
        )
    lines += [
        "",
        "`other cores`: CPU the rest of the machine used during the request (other "
        "sessions' work). A file that declares no length is decoded up to the limit, only "
        "counting; one that declares less than it holds is held up to what it declares.",
        "",
        "## Machine",
        "",
        report.machine_markdown(result["machine"]),
        f"- load average at the start: {result['machine']['loadavg_at_start']} (2 cores: "
        "other sessions' tests and builds shared the machine; see `other cores` above)",
        f"- service code: {result['code']}",
    ]
    report.write(out, name, result, "\n".join(lines))
