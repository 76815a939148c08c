"""Peak resident memory of the model server given a 10-hour FLAC.

    .venv/bin/python -m bench model-server-memory          # or: make bench-model-memory
    .venv/bin/python -m bench model-server-memory --hours 1 --out bench/results/tmp  # quick
    .venv/bin/python -m bench model-server-memory --no-refusals --long-hours 1,4 --baseline main

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

**Long files, accepted** (``--long-hours``, e.g. ``1,4``; none by default): that many hours of
digital silence with 11 s of speech (jfk.flac) every ``--speech-every-minutes`` (10) and at
the very end, as 16 kHz mono FLAC, transcribed through ``/v1/audio/transcriptions``
(``verbose_json``); the answer's words are checked. With ``--baseline REF`` each is sent
first to a second model server run from a snapshot of commit ``REF`` (``git archive``,
first on its ``PYTHONPATH``), the same settings, in the same run: the "before".

Target: peak < 400 MB for the 10-hour FLAC, declaring its length or none, on both
endpoints; and for a long file accepted, a peak that does not grow with its length (the
4-hour file within 100 MB of the 1-hour one). The file that lies is reported, not judged:
it is held up to what it declares, as a genuine file of that length would be (and as one
may send). Results:
``bench/results/<name>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import measure, report
from testkit.data import JFK_TEXT
from testkit.machine import loadavg
from testkit.media import (
    JFK,
    declare_flac_samples,
    decode_mono,
    silent_flac,
    speech_in_silence_flac,
)
from testkit.procs import ROOT, model_server
from testkit.text import words

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = [
    "--hours", "0.25", "--lie-hours", "0.1", "--accept-minutes", "0.5", "--quiet-wait", "0",
    "--long-hours", "0.1",
]  # fmt: skip


TARGET_MB = 400.0
#: A long file's peak may not grow by more than this from the shortest to the longest.
LONG_GROWTH_MB = 100.0
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
    parser.add_argument(
        "--long-hours",
        default="0",
        help="comma-separated lengths of the long files transcribed (0: none)",
    )
    parser.add_argument("--speech-every-minutes", type=float, default=10.0)
    parser.add_argument(
        "--baseline",
        help="a commit: the long files go first to a model server of that code (the before)",
    )
    parser.add_argument(
        "--no-refusals",
        action="store_true",
        help="only the long files (not the 10-hour FLAC's refusals nor --accept-minutes)",
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
    files: dict[str, bytes] = {}
    if not args.no_refusals:
        honest = silent_flac(seconds, sample_rate=44_100, layout="stereo")
        report.log(f"made {args.hours:g} h of FLAC: {len(honest) / MIB:.1f} MiB")
        files = {
            f"declares {args.hours:g} h": honest,
            "declares no length": _declare(honest, 0),
            f"declares {args.lie_hours:g} h (a lie)": _declare(honest, args.lie_hours * 3600),
        }
    if args.only_true_length:
        files = dict(list(files.items())[:1])
    long_hours = [float(h) for h in args.long_hours.split(",") if float(h) > 0]
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
        if not args.no_refusals:
            results = _refusals(args, files, settings, Path(tmp))
        long_rows = _long_files(args, long_hours, settings, Path(tmp)) if long_hours else []

    result = {
        "long_files": long_rows,
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


def _refusals(
    args: argparse.Namespace, files: dict[str, bytes], settings: dict[str, str], tmp: Path
) -> list[dict[str, Any]]:
    """The 10-hour FLAC's versions to both endpoints, then ``--accept-minutes`` of silence."""
    results: list[dict[str, Any]] = []
    with model_server(tmp / "model-server.log", 180, **settings) as server:
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
                data = silent_flac(args.accept_minutes * 60, sample_rate=44_100, layout="stereo")
                measure.wait_for_quiet(args.quiet_wait)
                out = _measure(client, pid, "/v1/audio/transcriptions", data)
                report.log(f"{label}: {out['status']}, peak {out['peak_rss_mb']} MB")
                results.append({"file": label, "bytes": len(data), **out})
    return results


def _long_files(
    args: argparse.Namespace, hours: list[float], settings: dict[str, str], tmp: Path
) -> list[dict[str, Any]]:
    """Each long file to a fresh server of the baseline's code (if any), then of this
    code, each warmed up first."""
    jfk = decode_mono(JFK)
    media: dict[float, bytes] = {}
    for h in hours:
        at = _speech_times(h, args.speech_every_minutes)
        media[h] = speech_in_silence_flac(h * 3600, jfk, at=at)
        report.log(f"made {h:g} h of FLAC ({len(at)} x JFK): {len(media[h]) / MIB:.1f} MiB")
    servers: list[tuple[str, dict[str, str]]] = []
    if args.baseline:
        env = _snapshot(args.baseline, tmp / "snapshot")
        commit = (tmp / "snapshot" / "COMMIT").read_text().strip()
        servers.append((f"before ({args.baseline}, {commit})", env))
    servers.append(("after (this code)", {}))
    # The warm-up: 5 minutes with JFK every 35 s, 9 chunks, so the VAD is loaded and one full
    # batch (8) has run before the measured request: what a long file adds is its own.
    warm_up = speech_in_silence_flac(300, jfk, at=[35.0 * n for n in range(9)])
    rows: list[dict[str, Any]] = []
    for h, data in media.items():
        for code, env in servers:
            log = tmp / f"model-server-{len(rows)}.log"
            with (
                model_server(log, 180, **settings, **env) as server,
                httpx.Client(base_url=server.url, timeout=1800) as client,
            ):
                warm = _measure(client, server.pid, "/v1/audio/transcriptions", warm_up)
                assert warm["status"] == 200, warm
                quiet = measure.wait_for_quiet(args.quiet_wait)
                out = _measure(client, server.pid, "/v1/audio/transcriptions", data, verbose=True)
            text = out.pop("text", "")
            expected = len(words(JFK_TEXT)) * len(_speech_times(h, args.speech_every_minutes))
            out["words"] = len(words(text))
            out["words_expected"] = expected
            out["machine_busy_before_cores"] = quiet
            out["warm_up_peak_rss_mb"] = warm["peak_rss_mb"]
            report.log(
                f"{code}, {h:g} h -> {out['status']}, peak {out['peak_rss_mb']} MB "
                f"(from {out['baseline_rss_mb']}; warm-up peak {warm['peak_rss_mb']}), "
                f"{out['server_cpu_s']} s CPU, {out['words']}/{expected} words"
            )
            rows.append({"code": code, "hours": h, "bytes": len(data), **out})
    return rows


def _speech_times(hours: float, every_minutes: float) -> list[float]:
    """Where JFK starts in a long file: every ``every_minutes``, and 12 s before its end."""
    seconds, every = hours * 3600, every_minutes * 60
    return sorted({*(n * every for n in range(int(seconds // every))), seconds - 12.0})


def _snapshot(ref: str, dest: Path) -> dict[str, str]:
    """The service code of commit ``ref`` in ``dest``, and the PYTHONPATH that runs it."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    (dest / "COMMIT").write_text(commit + "\n")
    paths = [dest / "shared", *(dest / "services" / s for s in ("transcriber", "model-server"))]
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": ":".join([*(str(p) for p in paths), *([old] if old else [])])}


def _declare(flac: bytes, seconds: float) -> bytes:
    return declare_flac_samples(flac, round(seconds * 44_100))


def _measure(
    client: httpx.Client, pid: int, endpoint: str, data: bytes, *, verbose: bool = False
) -> dict[str, Any]:
    base = measure.rss_kib(pid)
    measure.reset_peak_rss(pid)
    cpu0 = measure.cpu_seconds(pid)
    meter = measure.CpuMeter(groups={"model-server": {pid}})
    meter.start()
    started = time.perf_counter()
    if endpoint == "/v1/predict":
        response = client.post(endpoint, content=data, headers={"content-type": "audio/flac"})
    else:
        form = {"model": "whisper-1"}
        if verbose:
            form["response_format"] = "verbose_json"
        response = client.post(endpoint, files={"file": ("media.flac", data)}, data=form)
    wall = time.perf_counter() - started
    cpu = meter.stop()
    detail = response.json().get("detail") if response.status_code >= 400 else None
    extra = {}
    if verbose and response.status_code == 200:
        body = response.json()
        extra = {"text": body["text"], "duration": body["duration"]}
    return {
        **extra,
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
    title = "long files accepted" if not judged else f"a {hours:g}-hour FLAC, and long files"
    lines = [f"# The model server's peak RSS: {title}", ""]
    lines += _long_markdown(result.get("long_files", []))
    if not judged:
        lines += ["## Machine", "", report.machine_markdown(result["machine"])]
        lines.append(
            f"- load average at the start: {result['machine']['loadavg_at_start']} (2 cores: "
            "other sessions' tests and builds shared the machine; see `other cores` above)"
        )
        lines.append(f"- service code: {result['code']}")
        report.write(out, name, result, "\n".join(lines))
        return
    worst = max(r["peak_rss_mb"] for r in judged)
    lines += [
        f"## Refused: a {hours:g}-hour FLAC",
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


def _long_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    after = [r for r in rows if r["code"].startswith("after")]
    growth = max(r["peak_rss_mb"] for r in after) - min(r["peak_rss_mb"] for r in after)
    ok = all(r["status"] == 200 and r["words"] == r["words_expected"] for r in after)
    lines = [
        "## Long files, accepted and transcribed",
        "",
        "`/v1/audio/transcriptions` (`verbose_json`), tiny.en int8 on the CPU: hours of "
        "digital silence with jfk.flac's 11 s of speech every few minutes and at the end, "
        "16 kHz mono FLAC. Each request to a fresh server (default settings: "
        "`MAX_BATCH_SIZE` 8), warmed up with 5 minutes holding 9 chunks (one full batch): "
        "`VmHWM` reset after the warm-up and read after the request. `before`: the same "
        "settings from a snapshot of the commit named, in the same run. On the CPU a full "
        "batch's model work (tiny.en's encoder on 8 windows) is most of the warm-up's peak: "
        "bounded by `MAX_BATCH_SIZE`, not by the file.",
        "",
        f"**Target: the peak does not grow with the file (≤ {LONG_GROWTH_MB:.0f} MB from "
        f"the shortest to the longest, this code): {report.met(growth <= LONG_GROWTH_MB and ok)}"
        f"** (grew {growth:.1f} MB; every answer 200 with every word: {ok}).",
        "",
        "| code | hours | FLAC MiB | answer | words / expected | peak RSS MB | RSS before MB | "
        "growth MB | warm-up peak MB | server CPU s | wall s | other cores |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['code']} | {r['hours']:g} | {r['bytes'] / MIB:.1f} | {r['status']} | "
            f"{r['words']} / {r['words_expected']} | {r['peak_rss_mb']} | "
            f"{r['baseline_rss_mb']} | {r['peak_rss_mb'] - r['baseline_rss_mb']:.1f} | "
            f"{r.get('warm_up_peak_rss_mb', '')} | {r['server_cpu_s']} | {r['wall_seconds']} | "
            f"{r['other_cores']} |"
        )
    return [*lines, ""]
