"""Media files for tests and benchmarks, made with PyAV from the speech in tests/data.

Every container the worker must accept is encoded here from real speech (no ffmpeg binary),
so a test asserts on what the decoder gets out of a real mp3, m4a, mp4, ... file:

    >>> path = make_media("mp4", tmp_path)            # multilingual.mp3 as H.264 + AAC
    >>> path = make_media("webm", tmp_path, JFK)      # jfk.flac as Opus in WebM

plus the broken inputs: a video with no audio track, digital silence, a truncated file and
a text file named ``.mp3``. The functions are plain and deterministic enough for tests;
none of them is used by the service.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from testkit.data import DATA

#: 11 s of J. F. Kennedy, 44.1 kHz stereo FLAC.
JFK = DATA / "jfk.flac"
#: 60 s of the MIT licence read in English, then German; 24 kHz mono MP3.
MULTILINGUAL = DATA / "multilingual.mp3"

#: Durations of the fixtures in seconds, as their own containers state them.
JFK_SECONDS = 11.0
MULTILINGUAL_SECONDS = 59.9


@dataclass(frozen=True)
class MediaKind:
    """How to write one kind of test file."""

    suffix: str
    container: str
    audio_codec: str
    sample_rate: int
    layout: str = "mono"
    video_codec: str | None = None
    options: dict[str, str] | None = None


KINDS: dict[str, MediaKind] = {
    "mp3": MediaKind(".mp3", "mp3", "libmp3lame", 44_100, "stereo"),
    "m4a": MediaKind(".m4a", "ipod", "aac", 44_100, "stereo"),
    "mp4": MediaKind(".mp4", "mp4", "aac", 48_000, "stereo", video_codec="libx264"),
    "mov": MediaKind(".mov", "mov", "aac", 44_100, "mono", video_codec="mpeg4"),
    "webm": MediaKind(".webm", "webm", "libopus", 48_000, "stereo"),
    # FFmpeg's own Vorbis encoder (no libvorbis in PyAV's wheels) is "experimental".
    "ogg": MediaKind(".ogg", "ogg", "vorbis", 44_100, "stereo", options={"strict": "experimental"}),
    "wav": MediaKind(".wav", "wav", "pcm_s16le", 22_050, "mono"),
    "flac": MediaKind(".flac", "flac", "flac", 16_000, "mono"),
}

_VIDEO_SIZE = (64, 48)
_VIDEO_FPS = 5


def make_media(
    kind: str,
    dest_dir: Path,
    source: Path = MULTILINGUAL,
    *,
    repeat: int = 1,
    audio_start_s: float = 0.0,
    name: str | None = None,
) -> Path:
    """Re-encode ``source`` as ``kind`` (a key of :data:`KINDS`) in ``dest_dir``.

    ``repeat`` plays the source that many times back to back (a long file from a short one);
    ``audio_start_s`` starts the audio track that late (the video, if any, starts at 0).
    """
    spec = KINDS[kind]
    stem = name or f"{source.stem}{'' if repeat == 1 else f'-x{repeat}'}"
    dest = dest_dir / f"{stem}{spec.suffix}"
    with av.open(str(dest), "w", format=spec.container) as out:
        audio = out.add_stream(spec.audio_codec, rate=spec.sample_rate, layout=spec.layout)
        assert isinstance(audio, av.AudioStream) and audio.codec_context.format is not None
        if spec.options:
            audio.codec_context.options = dict(spec.options)
        video = _VideoTrack(out, spec.video_codec) if spec.video_codec else None
        samples = round(audio_start_s * spec.sample_rate)
        if video is not None:
            video.mux_until(audio_start_s)
        for frame in _frames(source, audio.codec_context.format.name, spec, repeat):
            frame.pts = samples
            frame.time_base = Fraction(1, spec.sample_rate)
            samples += frame.samples
            out.mux(audio.encode(frame))
            if video is not None:
                video.mux_until(samples / spec.sample_rate)
        out.mux(audio.encode(None))
        if video is not None:
            video.close()
    return dest


def make_video_without_audio(dest: Path, seconds: float = 3.0) -> Path:
    """An H.264 MP4 with one video track and no audio at all."""
    with av.open(str(dest), "w", format="mp4") as out:
        video = _VideoTrack(out, "libx264")
        video.mux_until(seconds)
        video.close()
    return dest


def make_silence_wav(dest: Path, seconds: float = 60.0, sample_rate: int = 16_000) -> Path:
    """``seconds`` of digital silence (all zero samples) as 16-bit mono WAV."""
    return write_wav(dest, np.zeros(round(seconds * sample_rate), dtype=np.int16), sample_rate)


def write_wav(dest: Path, samples: np.ndarray, sample_rate: int = 16_000) -> Path:
    """Write int16 mono ``samples`` as a WAV file."""
    with av.open(str(dest), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        step = sample_rate
        for start in range(0, len(samples), step):
            part = np.ascontiguousarray(samples[start : start + step], dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(part.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return dest


def silent_flac(
    seconds: float,
    *,
    sample_rate: int = 16_000,
    layout: str = "mono",
    declare_seconds: float | None = None,
) -> bytes:
    """``seconds`` of digital silence as a FLAC file (a few KB a minute: FLAC stores
    silence as constants). ``declare_seconds`` rewrites the length its STREAMINFO header
    declares (0: none), as a hostile upload may: 2 s of silence can claim 10 hours."""
    buffer = io.BytesIO()
    step = sample_rate * 10
    channels = 2 if layout == "stereo" else 1
    zeros = np.zeros((1, step * channels), dtype=np.int16)  # s16 is interleaved
    total = round(seconds * sample_rate)
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=sample_rate, layout=layout)
        for start in range(0, total, step):
            samples = min(step, total - start)
            frame = av.AudioFrame.from_ndarray(
                zeros[:, : samples * channels], format="s16", layout=layout
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buffer.getvalue()
    if declare_seconds is not None:
        data = declare_flac_samples(data, round(declare_seconds * sample_rate))
    return data


def speech_in_silence_flac(seconds: float, speech: np.ndarray, at: list[float]) -> bytes:
    """``seconds`` of digital silence with ``speech`` (16 kHz mono float32 samples)
    starting at each of ``at`` (seconds), as 16 kHz mono FLAC: a long recording that
    encodes small (silence is a few KB a minute) and decodes fast."""
    rate = 16_000
    total = round(seconds * rate)
    pcm = (np.clip(speech, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    starts = sorted(round(t * rate) for t in at)
    step = rate * 10
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        for start in range(0, total, step):
            end = min(start + step, total)
            block = np.zeros(end - start, dtype=np.int16)
            for first in starts:
                lo, hi = max(start, first), min(end, first + len(pcm))
                if lo < hi:
                    block[lo - start : hi - start] = pcm[lo - first : hi - first]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def declare_flac_samples(data: bytes, samples: int) -> bytes:
    """``data`` (a FLAC file) with the total sample count of its STREAMINFO set to
    ``samples`` (0 means unknown): the 36 low bits of the 8 bytes after the block sizes."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must come first"
    field = int.from_bytes(data[18:26], "big")
    field = (field & ~((1 << 36) - 1)) | samples
    return data[:18] + field.to_bytes(8, "big") + data[26:]


def make_truncated(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``src``'s bytes, as a download cut off midway leaves it."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def make_text_file(dest: Path) -> Path:
    """A text file, whatever its name says (e.g. ``not-audio.mp3``)."""
    dest.write_text("This is a text file, not media.\n" * 200, encoding="utf-8")
    return dest


def decode_mono(source: Path, sample_rate: int = 16_000) -> np.ndarray:
    """All of ``source``'s first audio stream as float32 mono at ``sample_rate`` (reference)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    parts: list[np.ndarray] = []
    with av.open(str(source)) as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().ravel() for f in resampler.resample(frame))
    parts.extend(f.to_ndarray().ravel() for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


def _frames(source: Path, fmt: str, spec: MediaKind, repeat: int) -> Iterator[av.AudioFrame]:
    for _ in range(repeat):
        resampler = av.AudioResampler(format=fmt, layout=spec.layout, rate=spec.sample_rate)
        with av.open(str(source)) as container:
            for frame in container.decode(audio=0):
                frame.pts = None
                yield from resampler.resample(frame)
        yield from resampler.resample(None)


class _VideoTrack:
    """A small moving picture, encoded as the audio goes, so the muxer interleaves both."""

    def __init__(self, out: av.container.OutputContainer, codec: str) -> None:
        self.out = out
        stream = out.add_stream(codec, rate=_VIDEO_FPS)
        assert isinstance(stream, av.VideoStream)
        self.stream = stream
        self.stream.width, self.stream.height = _VIDEO_SIZE
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"preset": "ultrafast"}
        self.frames = 0

    def mux_until(self, t: float) -> None:
        width, height = _VIDEO_SIZE
        while self.frames / _VIDEO_FPS < t:
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[:, self.frames % width] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames
            frame.time_base = Fraction(1, _VIDEO_FPS)
            self.out.mux(self.stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        self.out.mux(self.stream.encode(None))


def envelope_similarity(a: np.ndarray, b: np.ndarray, *, max_lag_s: float = 0.1) -> float:
    """How alike two 16 kHz signals sound, roughly: the best correlation of their 10 ms
    energy envelopes (in dB) over lags up to ``max_lag_s`` (codecs delay audio a little).

    1.0 is the same loudness contour; a different recording, or noise, scores far lower.
    """
    hop = 160
    n = min(len(a), len(b)) // hop
    env_a, env_b = (_envelope_db(x[: n * hop], hop) for x in (a, b))
    best = -1.0
    max_lag = int(max_lag_s * 16_000 / hop)
    for lag in range(-max_lag, max_lag + 1):
        x = env_a[max(lag, 0) : n + min(lag, 0)]
        y = env_b[max(-lag, 0) : n - max(lag, 0)]
        best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


def _envelope_db(x: np.ndarray, hop: int) -> np.ndarray:
    frames = x.astype(np.float64).reshape(-1, hop)
    envelope: np.ndarray = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    return envelope
