"""Bounded decoding with PyAV: any media's audio to 16 kHz mono s16 samples.

The one decoding loop of the worker (``transcriber_service/media.py``: a job's media to a
PCM file) and the model server (``model_server/audio.py``: a request body to samples in
memory). Each gives it where the samples go (``take``) and bounds it there: the worker
counts against ``MAX_MEDIA_SECONDS`` as it writes, the model server against its own
limits as it fills an array sized by the declared duration.

* :func:`open_media` opens a file or a stream, in a container format we read (not a
  playlist or anything that opens other files or URLs: :data:`ALLOWED_FORMATS`);
* :func:`audio_stream` picks the best audio stream (FFmpeg's ranking) and has the demuxer
  drop every other stream undecoded;
* :func:`declared_seconds` is the duration the container claims, checked against a limit
  before any decoding (with :data:`DECLARED_SLACK_S`, as headers round);
* :func:`decode` demuxes, decodes and resamples (``av.AudioResampler(format="s16",
  layout="mono", rate=16000)``, the samples faster-whisper's ``decode_audio`` gives),
  surviving a change of input format midway. Packets that fail to decode are skipped, as
  the ``ffmpeg`` command line does, unless they outnumber the good ones past a small
  allowance; a demuxer error after some audio ends the audio there (a file cut off).

Failures are :class:`AudioError`, whose ``reason`` is the job failure reason it means
(``MEDIA_UNDECODABLE``, ``NO_AUDIO_FOUND``, ``MEDIA_TOO_LARGE``); each service maps it to
its own error (a job's ``MediaError``, the model server's 422 and 413 problems).

It is synchronous and CPU-bound: callers run it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer

from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.errors import TranscriptionError
from transcription_core.status import FailureReason

#: Slack on the duration a container declares (headers round, VBR MP3s estimate).
DECLARED_SLACK_S = 1.0
#: Undecodable packets tolerated before we compare them with the good ones.
ERROR_ALLOWANCE = 50
#: The demuxers FFmpeg may use: audio and video containers. Those that open other files
#: or URLs named inside the input (hls, dash, concat, sdp, ...) are left off, so that an
#: uploaded playlist cannot make us read another job's files or fetch a URL.
ALLOWED_FORMATS = (
    "mov", "matroska", "mp3", "aac", "loas", "ogg", "wav", "w64", "flac", "aiff", "caf",
    "avi", "asf", "flv", "mpegts", "mpeg", "mxf", "rm", "amr", "amrnb", "amrwb", "ac3",
    "eac3", "dts", "truehd", "mlp", "wv", "ape", "tta", "mpc", "mpc8", "au", "voc",
)  # fmt: skip
_OPEN_OPTIONS = {"format_whitelist": ",".join(ALLOWED_FORMATS), "protocol_whitelist": "file"}


class AudioError(TranscriptionError):
    """The media cannot be turned into audio; ``reason`` says why, as a job would fail."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    """What :func:`decode` met on the way."""

    #: Packets that failed to decode and were skipped.
    errors: int
    #: Decoding stopped at a read error: the file is probably cut off.
    truncated: bool


def open_media(source: Path | BinaryIO) -> InputContainer:
    """The container of a media file, or :class:`AudioError` (``MEDIA_UNDECODABLE``)."""
    try:
        return av.open(
            str(source) if isinstance(source, Path) else source,
            mode="r",
            options=_OPEN_OPTIONS,
            metadata_errors="ignore",
        )
    except av.FFmpegError as exc:
        raise AudioError(
            FailureReason.MEDIA_UNDECODABLE,
            f"not a media file in a format we read ({why(exc)})",
        ) from exc


def audio_stream(container: InputContainer) -> AudioStream:
    """The best audio stream; the demuxer drops the others. :class:`AudioError` if none."""
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams})
        found = f"only {', '.join(kinds)} streams" if kinds else "no streams"
        raise AudioError(FailureReason.NO_AUDIO_FOUND, f"the media has no audio stream ({found})")
    try:
        stream = container.streams.best("audio")
    except av.FFmpegError:
        stream = None
    if not isinstance(stream, AudioStream):
        stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise AudioError(
            FailureReason.MEDIA_UNDECODABLE,
            f"the audio codec {stream.codec.name if stream.codec else '?'} cannot be decoded",
        )
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return stream


def declared_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    """The duration the audio stream, or else the container, declares."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def decode(
    container: InputContainer,
    stream: AudioStream,
    take: Callable[[np.ndarray], None],
    *,
    starts_at: Callable[[float], None] | None = None,
    channel: int | None = None,
) -> Decoded:
    """Decode ``stream``, handing each run of 16 kHz mono s16 samples to ``take`` (which
    may raise to stop, e.g. past a limit): its channels mixed down, or only ``channel``
    (0 first). ``starts_at`` hears, before the first samples, how many seconds after the
    container's start the audio starts."""
    if channel is not None and not 0 <= channel < stream.codec_context.channels:
        raise ValueError(
            f"the stream has {stream.codec_context.channels} channels, no channel {channel}"
        )
    resampler = _Resampler(None if channel is None else stream.layout.name)
    container_start = (container.start_time or 0) / av.time_base
    good = errors = 0
    started = truncated = False
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:
            if not started:
                raise AudioError(
                    FailureReason.MEDIA_UNDECODABLE, f"the media is corrupt ({why(exc)})"
                ) from exc
            truncated = True
            break
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            errors += 1
            if errors > ERROR_ALLOWANCE and errors > good:
                raise AudioError(
                    FailureReason.MEDIA_UNDECODABLE,
                    f"the audio is corrupt: {errors} packets could not be decoded ({why(exc)})",
                ) from exc
            continue
        good += 1
        for frame in frames:
            if not started:
                started = True
                if starts_at is not None and frame.time is not None:
                    starts_at(frame.time - container_start)
            _take(_converted(resampler.resample, frame), take, channel or 0)
    _take(_converted(resampler.flush), take, channel or 0)
    return Decoded(errors=errors, truncated=truncated)


def why(exc: av.FFmpegError) -> str:
    return exc.strerror or type(exc).__name__


def _take(frames: list[AudioFrame], take: Callable[[np.ndarray], None], channel: int) -> None:
    """Each frame's samples of ``channel`` (a mono frame has only channel 0)."""
    for frame in frames:
        samples = frame.to_ndarray()
        take(samples[channel] if samples.ndim == 2 else samples.reshape(-1))


def _converted(convert: Callable[..., list[AudioFrame]], *frame: AudioFrame) -> list[AudioFrame]:
    """Resample, turning FFmpeg's refusal (a nonsense sample rate or layout) into a failure."""
    try:
        return convert(*frame)
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError(
            FailureReason.MEDIA_UNDECODABLE, f"the audio cannot be converted ({exc})"
        ) from exc


class _Resampler:
    """``av.AudioResampler`` to 16 kHz mono s16 that survives a change of input format.

    A stream may change its sample rate or layout midway (a broadcast recording, an
    HE-AAC switch); PyAV's resampler refuses such a frame, so we flush it and start a new
    one.
    """

    def __init__(self, layout: str | None = None) -> None:
        #: None: mixed down to mono; a layout: its channels kept apart (planar s16).
        self._layout = layout
        self._resampler = self._new()

    def _new(self) -> av.AudioResampler:
        if self._layout is None:
            return av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        return av.AudioResampler(format="s16p", layout=self._layout, rate=SAMPLE_RATE)

    def resample(self, frame: AudioFrame) -> list[AudioFrame]:
        try:
            return self._resampler.resample(frame)
        except ValueError:
            out = self.flush()
            self._resampler = self._new()
            return out + self._resampler.resample(frame)

    def flush(self) -> list[AudioFrame]:
        return self._resampler.resample(None)
