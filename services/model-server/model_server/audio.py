"""Request bodies to 16 kHz mono float32 samples.

All of it is CPU work: the routes call it through a worker thread.
"""

from __future__ import annotations

import io
import math
from typing import BinaryIO

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer

from model_server.errors import AudioTooLong, EmptyAudio, UndecodableAudio
from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.errors import TranscriptionError
from transcription_core.predict import PCM_CONTENT_TYPE

#: Slack on a declared duration (headers round; VBR MP3s estimate): a file declaring up
#: to this much over the limit is judged by its decoded samples instead.
_DECLARED_SLACK_S = 1.0


def is_pcm(content_type: str | None) -> bool:
    return _media_type(content_type) == PCM_CONTENT_TYPE


def pcm_to_float32(body: bytes, content_type: str | None = None) -> np.ndarray:
    """Raw signed 16-bit little-endian mono PCM at 16 kHz to float32 in [-1, 1)."""
    params = _parameters(content_type)
    if params.get("rate", str(SAMPLE_RATE)) != str(SAMPLE_RATE):
        raise UndecodableAudio(f"PCM must be sampled at {SAMPLE_RATE} Hz, not {params['rate']}")
    if params.get("channels", "1") != "1":
        raise UndecodableAudio(f"PCM must be mono, not {params['channels']} channels")
    if not body:
        raise EmptyAudio("the request body is empty: send at least one PCM sample")
    if len(body) % 2:
        raise UndecodableAudio(
            f"{len(body)} bytes is not a whole number of 16-bit samples (PCM s16le)"
        )
    return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0


def decode_media(
    data: bytes | BinaryIO, *, max_seconds: float, limit_name: str = "the limit"
) -> np.ndarray:
    """Any audio or video file PyAV can read, resampled to 16 kHz mono float32, if it lasts
    at most ``max_seconds``; else :class:`AudioTooLong` (naming ``limit_name``).

    The first audio stream goes through an s16 mono 16 kHz resampler, as in
    faster-whisper's ``decode_audio`` (the same samples), but memory follows the limit,
    not the file:

    * a file whose container declares more than the limit is refused before any decoding
      (a 20 MB FLAC can declare, and hold, 10 hours: 2.3 GB of float32);
    * the samples go straight into one array sized by the declared duration, and decoding
      stops as soon as the audio passes the limit;
    * a file that declares no duration, or less than it holds, is decoded once more: the
      first pass keeps what fits the declared size and only counts the rest (up to the
      limit), the second fills an array of the counted size. So the audio is never held
      twice, a file refused costs what it declared, and decoding work is bounded by the
      limit too.

    Packets that fail to decode are skipped (as the ``ffmpeg`` command line does).
    """
    if isinstance(data, bytes):
        if not data:
            raise EmptyAudio("the request body is empty: send an audio file")
        data = io.BytesIO(data)
    start = data.tell()
    try:
        audio, count = _decode(data, max_seconds, capacity=None)
        if count > audio.shape[0]:
            # It declared no duration, or less than it holds: now we know how much.
            del audio
            data.seek(start)
            audio, count = _decode(data, max_seconds, capacity=count)
    except _OverLimit as over:
        if over.declared is None:
            what = f"the audio lasts more than {max_seconds:g} s"
        else:
            what = f"the file declares {over.declared:.1f} s of audio"
        raise AudioTooLong(f"{what}, over the {max_seconds:g} s limit ({limit_name})") from None
    except UndecodableAudio:
        raise
    except Exception as exc:  # PyAV raises many kinds on bad input; all mean the same to us.
        raise UndecodableAudio(
            f"the body is not a media file with audio we can decode ({type(exc).__name__}: {exc})"
        ) from exc
    if count == 0:
        raise EmptyAudio("the file decodes to no audio samples")
    return audio[: min(count, audio.shape[0])]


class _OverLimit(TranscriptionError):
    """Over the limit: by the duration the file declares, or (``None``) by its samples."""

    def __init__(self, declared: float | None = None) -> None:
        super().__init__()
        self.declared = declared


def _decode(data: BinaryIO, max_seconds: float, capacity: int | None) -> tuple[np.ndarray, int]:
    """One pass over ``data``: the audio in an array of ``capacity`` samples (``None``: of
    the declared duration, once it is checked against the limit) and the samples counted."""
    max_samples = math.floor(max_seconds * SAMPLE_RATE)
    with _open(data) as container:
        stream = container.streams.audio[0]
        if capacity is None:
            capacity = 0
            declared = _declared_seconds(container, stream)
            if declared is not None:
                if declared > max_seconds + _DECLARED_SLACK_S:
                    raise _OverLimit(declared)
                capacity = min(max_samples, math.ceil((declared + _DECLARED_SLACK_S) * SAMPLE_RATE))
        audio = np.empty(capacity, dtype=np.float32)
        return audio, _decode_into(container, stream, audio, max_samples)


def _open(data: BinaryIO) -> InputContainer:
    container = av.open(data, mode="r", metadata_errors="ignore")
    if not container.streams.audio:
        container.close()
        raise UndecodableAudio("the file has no audio stream")
    return container


def _declared_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    """The duration the audio stream, or else the container, declares."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _decode_into(
    container: InputContainer, stream: AudioStream, out: np.ndarray, max_samples: int
) -> int:
    """Decode ``stream`` resampled into ``out`` as far as it fits, counting the samples
    beyond it; return the count. :class:`_OverLimit` once it passes ``max_samples``."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    count = 0

    def take(frames: list[AudioFrame]) -> None:
        nonlocal count
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1)
            end = count + samples.shape[0]
            if end > max_samples:
                raise _OverLimit
            if end <= out.shape[0]:
                np.multiply(samples, 1 / 32768, out=out[count:end], casting="unsafe")
            elif count < out.shape[0]:
                fits = out.shape[0] - count
                np.multiply(samples[:fits], 1 / 32768, out=out[count:], casting="unsafe")
            count = end

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            if count == 0:
                raise
            break  # a file cut off part way: what decoded is the audio
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            take(resampler.resample(frame))
    take(resampler.resample(None))
    return count


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _parameters(content_type: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params
