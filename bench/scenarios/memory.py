"""Peak resident memory of the transcriber process over a whole job, by media size.

    .venv/bin/python -m bench memory                          # 10 MiB, 100 MiB, 1 GiB; wav, mov
    .venv/bin/python -m bench memory --sizes-mib 10 --kinds wav   # a quick look

**Media** (made with PyAV in a temporary folder, deleted at the end; never committed), from
the speech of ``bench.speech`` (the fixtures of tests/data in turn, with pauses), to a
target size of ``--sizes-mib`` (10, 100, 1024 MiB):

* ``wav``: that speech, resampled by PyAV to 96 kHz stereo, signed 32-bit PCM in a WAV
  (768 kB a second), repeated until the file has the target size: the audio grows with the
  file (1 GiB is 23.3 minutes), the decoder's real worst case (every byte is audio);
* ``mov``: ``--mov-audio-minutes`` (5) of that speech as AAC (64 kb/s, 48 kHz mono) beside
  an uncompressed video track (``rawvideo``, yuv420p, 1 frame a second of noise, its frame
  size chosen to reach the target size): a big video whose audio stays bounded, with the
  MP4 index (``moov``) at the end as a camera writes it.

**The job**: the four services run as processes (``transcription serve ...``) on a scratch
PostgreSQL database, tiny.en on the model server (defaults: MAX_BATCH_SIZE 8, CHUNK_CONCURRENCY
4, MAX_MEDIA_SECONDS 4 h, MAX_DOWNLOAD_BYTES 2 GiB); a media server streams the file over
loopback from this process. For each file, smallest first, after a warm-up job (so the VAD
model is loaded): the transcriber's peak RSS is reset (``/proc/<pid>/clear_refs`` ← 5), one
job is enqueued and waited for until its webhook, and the peak is read back
(``VmHWM``); a thread also samples ``VmRSS`` and ``RssAnon`` every 50 ms, for the trace
and to tell where the peak is (download, decode + VAD, transcription). Only the
transcriber's process is measured (it has no children); the model server's memory is not.

Target: peak < 300 MB for 1 GiB of media. Results: ``bench/results/memory-<date>.json``,
``.md`` and ``.png`` (RSS over each job).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

from bench import measure, report, stack
from bench.database import scratch_database
from bench.speech import compose
from testkit.data import DATA
from testkit.machine import loadavg
from testkit.procs import descendants

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--sizes-mib", "10", "--kinds", "wav"]


MIB = 1 << 20
TARGET_MB = 300.0


# --- media ---------------------------------------------------------------------------------


def speech_cycle() -> np.ndarray:
    """One cycle of the long recording (``bench.speech``): 16 kHz mono float32, about 64 s."""
    samples, _, _ = compose(1)
    return samples


def _resampled(samples: np.ndarray, rate: int, layout: str, fmt: str) -> np.ndarray:
    """16 kHz mono float32 → ``rate``/``layout``/``fmt`` packed samples, by PyAV."""
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = 16_000
    frame.pts = 0
    out = [f.to_ndarray() for f in resampler.resample(frame)]
    out += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1)


def make_wav(dest: Path, target_bytes: int) -> dict[str, Any]:
    """96 kHz stereo s32 WAV of repeated speech, ``target_bytes`` long."""
    rate, channels, width = 96_000, 2, 4
    cycle = _resampled(speech_cycle(), rate, "stereo", "s32")  # (1, n * 2) packed
    frames_needed = (target_bytes - 44) // (channels * width)
    block = 9_600  # samples per frame written
    with av.open(str(dest), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s32le", rate=rate, layout="stereo")
        written = 0
        position = 0
        cycle_frames = cycle.shape[1] // channels
        while written < frames_needed:
            n = min(block, frames_needed - written, cycle_frames - position)
            data = cycle[:, position * channels : (position + n) * channels]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format="s32", layout="stereo"
            )
            frame.sample_rate = rate
            frame.pts = written
            for packet in stream.encode(frame):
                out.mux(packet)
            written += n
            position = (position + n) % cycle_frames
        for packet in stream.encode(None):
            out.mux(packet)
    return {
        "audio_seconds": round(frames_needed / rate, 1),
        "format": "wav pcm_s32le 96 kHz stereo",
    }


def make_mov(dest: Path, target_bytes: int, audio_minutes: float) -> dict[str, Any]:
    """``audio_minutes`` of AAC speech beside a rawvideo track filling ``target_bytes``."""
    audio_s = audio_minutes * 60
    fps = 1
    audio_bytes = int(audio_s * 64_000 / 8)
    frame_bytes = max(96, (target_bytes - audio_bytes) // int(audio_s * fps))
    width = max(16, int((frame_bytes / 1.125) ** 0.5) // 16 * 16)
    height = max(16, int(frame_bytes / 1.5 / width) // 2 * 2)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8) for _ in range(4)]
    speech = speech_cycle()
    cycle = _resampled(speech, 48_000, "mono", "fltp")[0]
    total = int(audio_s * 48_000)
    with av.open(str(dest), mode="w", format="mov") as out:
        video = out.add_stream("rawvideo", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48_000, layout="mono")
        audio.bit_rate = 64_000
        written = 0
        for second in range(int(audio_s)):
            end = min(total, (second + 1) * 48_000)
            while written < end:
                n = min(1024, end - written)
                start = written % len(cycle)
                data = np.take(cycle, range(start, start + n), mode="wrap").astype(np.float32)
                frame = av.AudioFrame.from_ndarray(
                    data.reshape(1, -1), format="fltp", layout="mono"
                )
                frame.sample_rate = 48_000
                frame.pts = written
                frame.time_base = Fraction(1, 48_000)
                for packet in audio.encode(frame):
                    out.mux(packet)
                written += n
            vf = av.VideoFrame.from_ndarray(noise[second % len(noise)], format="yuv420p")
            vf.pts = second
            vf.time_base = Fraction(1, fps)
            for packet in video.encode(vf):
                out.mux(packet)
        for stream in (audio, video):
            for packet in stream.encode(None):
                out.mux(packet)
    return {
        "audio_seconds": round(audio_s, 1),
        "format": f"mov: aac 64 kb/s 48 kHz mono + rawvideo {width}x{height} yuv420p {fps} fps",
    }


# --- RSS sampling -------------------------------------------------------------------------


class RssSampler:
    """``VmRSS`` and ``RssAnon`` of one process every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time.time(), VmRSS KiB, RssAnon KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        path = Path(f"/proc/{self.pid}/status")
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                values = {}
                for line in path.read_text().splitlines():
                    if line.startswith(("VmRSS:", "RssAnon:")):
                        values[line.split(":")[0]] = int(line.split()[1])
                self.samples.append((time.time(), values.get("VmRSS", 0), values.get("RssAnon", 0)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> float | None:
        values = [rss for t, rss, _ in self.samples if start <= t <= end]
        return round(max(values) / 1024, 1) if values else None


# --- one job ----------------------------------------------------------------------------------


async def one_job(
    services: stack.Services, peers: stack.Peers, name: str, timeout: float
) -> dict[str, Any]:
    pid = services.pid("transcriber")
    media_before = len(peers.media.log)
    base_rss = measure.rss_kib(pid)
    measure.reset_peak_rss(pid)
    with RssSampler(pid) as sampler:
        async with httpx.AsyncClient(timeout=30) as client:
            one = await stack.run_one(client, services, peers, name, timeout, language="en")
        job, final, posted, wall = one.job, one.final, one.posted, one.wall_seconds
        ended = time.time()
        peak_hwm = measure.rss_kib(pid, "VmHWM")
    timeline = await stack.job_timeline(services.database_url, job["id"])
    media = [m for m in peers.media.log[media_before:] if m.file == name]
    download_end = media[-1].ended if media and media[-1].ended else None
    first_chunk = timeline.get("first_chunk_saved")
    phases = {
        "download": (timeline.get("PROCESSING", posted), download_end),
        "decode_vad_first_chunk": (download_end, first_chunk),
        "transcribe_rest_and_webhook": (first_chunk, ended),
    }
    peaks = {
        k: sampler.peak_between(a, b) if a is not None and b is not None else None
        for k, (a, b) in phases.items()
    }
    return {
        "job_id": job["id"],
        "status": final["status"],
        "failure_reason": final.get("failure_reason"),
        "failure_detail": final.get("failure_detail"),
        "wall_seconds": round(wall, 2),
        "baseline_rss_mb": round(base_rss / 1024, 1),
        "peak_rss_mb": round(peak_hwm / 1024, 1),
        "peak_rss_sampled_mb": round(max(s[1] for s in sampler.samples) / 1024, 1),
        "peak_rss_anon_sampled_mb": round(max(s[2] for s in sampler.samples) / 1024, 1),
        "peak_by_phase_sampled_mb": peaks,
        "download_seconds": round(download_end - media[-1].at, 2) if download_end else None,
        "chunks": timeline.get("chunks"),
        "children": len(descendants(pid)),
        "trace": [
            (round(t - posted, 2), round(rss / 1024, 1)) for t, rss, _ in sampler.samples[::4]
        ],
        "phase_times_after_post_s": {
            k: [round(a - posted, 2) if a else None, round(b - posted, 2) if b else None]
            for k, (a, b) in phases.items()
        },
        "loadavg": loadavg(),
    }


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[10, 100, 1024])
    parser.add_argument("--kinds", default="wav,mov")
    parser.add_argument("--mov-audio-minutes", type=float, default=5.0)
    parser.add_argument("--tmp", type=Path, default=None, help="where media are made")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--job-timeout", type=float, default=3600.0)
    parser.add_argument("--fresh", action="store_true", help="new services for each file")
    parser.add_argument("--repeat", type=int, default=1, help="jobs per file, one after another")
    parser.add_argument("--name", default="memory", help="result file name prefix")
    parser.add_argument(
        "--transcriber-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the transcriber (e.g. MALLOC_ARENA_MAX=2)",
    )
    args = parser.parse_args(argv)
    info = report.machine()
    kinds = [k for k in args.kinds.split(",") if k]
    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-", dir=args.tmp))
    try:
        media: list[tuple[str, int, Path, dict[str, Any]]] = []
        for size in sorted(args.sizes_mib):
            for kind in kinds:
                dest = tmp / f"speech-{size}MiB.{kind}"
                started = time.perf_counter()
                if kind == "wav":
                    made = make_wav(dest, size * MIB)
                else:
                    made = make_mov(dest, size * MIB, args.mov_audio_minutes)
                made["bytes"] = dest.stat().st_size
                report.log(
                    f"made {dest.name}: {made['bytes'] / MIB:.0f} MiB, {made['audio_seconds']} s "
                    f"of audio, in {time.perf_counter() - started:.0f} s"
                )
                media.append((kind, size, dest, made))
        shutil.copyfile(DATA / "jfk.flac", tmp / "jfk.flac")
        work = tmp / "work"
        work.mkdir()
        settings = {
            "model-server": {
                "MODEL": "tiny.en",
                "MODEL_DEVICE": "cpu",
                "MODEL_COMPUTE_TYPE": "int8",
            },
            "transcriber": {
                "WORK_DIR": str(work),
                **dict(item.split("=", 1) for item in args.transcriber_env),
            },
        }
        log_dir = report.TMP / "memory-logs"
        with scratch_database("bench_memory") as url, stack.Peers(tmp) as peers:
            # One transcriber for every file (its memory carries from job to job), or
            # with --fresh a new set of services per file (only the warm-up before it).
            groups = [[m] for m in media] if args.fresh else [media]
            for number, group in enumerate(groups):
                tenant = f"org-bench-{number}"
                with stack.running_services(url, settings, log_dir, tenant) as services:
                    warm = asyncio.run(one_job(services, peers, "jfk.flac", 300))
                    report.log(f"warm-up (jfk.flac): peak {warm['peak_rss_mb']} MB")
                    results.append({"kind": "warm-up", "size_mib": 1.1, **warm})
                    for kind, size, path, made in group:
                        for repeat in range(args.repeat):
                            out = asyncio.run(one_job(services, peers, path.name, args.job_timeout))
                            report.log(
                                f"{path.name}: {out['status']} in {out['wall_seconds']} s, "
                                f"baseline {out['baseline_rss_mb']} MB, peak "
                                f"{out['peak_rss_mb']} MB (load {out['loadavg']})"
                            )
                            results.append(
                                {"kind": kind, "size_mib": size, "media": made,
                                 "repeat": repeat, **out}
                            )  # fmt: skip
                        path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mode = {
        "fresh_services_per_file": args.fresh,
        "repeat": args.repeat,
        "transcriber_env": args.transcriber_env,
    }
    result = {"machine": info, "loadavg_at_end": loadavg(), "mode": mode, "jobs": results}
    write_report(result, args.out, args.name)


def write_report(result: dict[str, Any], out: Path, name: str = "memory") -> None:
    info = result["machine"]
    lines = [
        "# Transcriber peak memory by media size",
        "",
        report.machine_markdown(info),
        f"- load average (1, 5, 15 min) at start {info['loadavg_at_start']}, at end "
        f"{result['loadavg_at_end']}; **the machine was shared with other sessions' tests "
        "and benchmarks**",
        "",
        "The transcriber process only (`VmHWM` after its peak was reset before the job); MB = MiB.",
        "",
        "| media | file MiB | audio s | status | wall s | download s | chunks | RSS before MB | "
        "**peak RSS MB** | peak anon MB | peak in download / decode+VAD / transcribe MB | load |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for j in result["jobs"]:
        m = j.get("media", {})
        p = j["peak_by_phase_sampled_mb"]
        lines.append(
            f"| {j['kind']} #{j.get('repeat', 0) + 1} | {m.get('bytes', 0) / MIB:.0f} | "
            f"{m.get('audio_seconds', 11.0)} | "
            f"{j['status']} | {j['wall_seconds']:.0f} | {j['download_seconds']} | {j['chunks']} | "
            f"{j['baseline_rss_mb']} | **{j['peak_rss_mb']}** | {j['peak_rss_anon_sampled_mb']} | "
            f"{p['download']} / {p['decode_vad_first_chunk']} / {p['transcribe_rest_and_webhook']}"
            f" | {j['loadavg']} |"
        )
    big = [j for j in result["jobs"] if j.get("size_mib", 0) >= 1024]
    if big:
        worst = max(j["peak_rss_mb"] for j in big)
        ok = worst < TARGET_MB and all(j["status"] == "SUCCEEDED" for j in big)
        lines += [
            "",
            f"Target: peak < {TARGET_MB:.0f} MB for 1 GiB of media: worst {worst} MB, "
            f"**{report.met(ok)}**.",
        ]
    for j in result["jobs"]:
        if j["kind"] != "warm-up":
            lines.append(f"- {j['kind']} {j['size_mib']} MiB: {j['media']['format']}")
    png = plot(result, out, name)
    lines += ["", f"![RSS over each job]({png.name})"]
    print("\n".join(lines))
    report.write(out, name, result, "\n".join(lines), also=[png])


def plot(result: dict[str, Any], out: Path, name: str = "memory") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for j in result["jobs"]:
        if j["kind"] == "warm-up":
            continue
        xs = [t for t, _ in j["trace"]]
        ys = [r for _, r in j["trace"]]
        label = f"{j['kind']} {j['size_mib']} MiB #{j.get('repeat', 0) + 1}"
        ax.plot(xs, ys, lw=1, label=f"{label} (peak {j['peak_rss_mb']} MB)")
    ax.axhline(TARGET_MB, color="red", ls="--", lw=0.8, label=f"target {TARGET_MB:.0f} MB")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the job was enqueued")
    ax.set_ylabel("transcriber VmRSS, MB")
    ax.set_title("transcriber resident memory during one job")
    ax.legend(fontsize=8)
    fig.tight_layout()
    day = time.strftime("%Y-%m-%d", time.gmtime())
    path = out / f"{name}-{day}.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
