"""Request bodies to 16 kHz mono audio: a chunk (``/v1/predict``) to float32 samples in
memory, PCM as it is sent or media decoded within ``MAX_CHUNK_SECONDS``; a whole file (the
OpenAI endpoints) to a PCM file on disk within ``MAX_FILE_SECONDS``, as the worker decodes
a job's media (:func:`decode_media_to_pcm`), so that its length never sits in memory.

All of it is CPU work: the routes call it through a worker thread.
"""

from __future__ import annotations

import errno
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from model_server.errors import AudioTooLong, EmptyAudio, UndecodableAudio, WorkDiskFull
from transcription_core.audio import decode as media
from transcription_core.audio.pcm import PCM_CONTENT_TYPE, PCM_DTYPE, SAMPLE_RATE, to_float32
from transcription_core.audio.pcm_file import TooLong, decode_to_pcm


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
    return to_float32(np.frombuffer(body, dtype=PCM_DTYPE))


def decode_media(
    data: bytes | BinaryIO, *, max_seconds: float, limit_name: str = "the limit"
) -> np.ndarray:
    """Any audio or video file PyAV can read, resampled to 16 kHz mono float32, if it lasts
    at most ``max_seconds``; else :class:`AudioTooLong` (naming ``limit_name``).

    PyAV decoding is the worker's (``transcription_core.audio.decode``): the best audio
    stream through an s16 mono 16 kHz resampler, as in faster-whisper's ``decode_audio``
    (the same samples), in a container format we read. Memory follows the limit, not the
    file:

    * a file whose container declares more than the limit is refused before any decoding
      (a 20 MB FLAC can declare, and hold, 10 hours: 2.3 GB of float32);
    * the samples go straight into one array sized by the declared duration, and decoding
      stops as soon as the audio passes the limit;
    * a file that declares no duration, or less than it holds, is decoded once more: the
      first pass keeps what fits the declared size and only counts the rest (up to the
      limit), the second fills an array of the counted size. So the audio is never held
      twice, a file refused costs what it declared, and decoding work is bounded by the
      limit too.

    Packets that fail to decode are skipped (as the ``ffmpeg`` command line does), unless
    they outnumber the good ones.
    """
    if isinstance(data, bytes):
        if not data:
            raise EmptyAudio("the request body is empty: send an audio file")
        data = io.BytesIO(data)
    start = data.tell()
    with _refusals(max_seconds, limit_name):
        audio, count = _decode(data, max_seconds, capacity=None)
        if count > audio.shape[0]:
            # It declared no duration, or less than it holds: now we know how much.
            del audio
            data.seek(start)
            audio, count = _decode(data, max_seconds, capacity=count)
    if count == 0:
        raise EmptyAudio("the file decodes to no audio samples")
    return audio[: min(count, audio.shape[0])]


def decode_media_to_pcm(
    data: BinaryIO, dest: Path, *, max_seconds: float, limit_name: str = "the limit"
) -> int:
    """Any audio or video file PyAV can read into ``dest`` as 16 kHz mono s16le PCM (the
    samples :func:`decode_media` gives, as int16), if it lasts at most ``max_seconds``;
    its number of samples. The same answers as :func:`decode_media` (413, 422) for the
    same file, but memory stays flat whatever its length: one decoded frame at a time,
    and ``dest`` takes 32 KB a second of audio (4 h: 461 MB). ``dest`` is removed on any
    failure."""
    with _refusals(max_seconds, limit_name):
        pcm = decode_to_pcm(data, dest, max_seconds=max_seconds, keep_timeline=False)
    if pcm.num_samples == 0:
        dest.unlink(missing_ok=True)
        raise EmptyAudio("the file decodes to no audio samples")
    return pcm.num_samples


#: A write that failed for want of room (a full disk, a quota, a file size limit): the
#: server's fault, not the upload's.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextmanager
def _refusals(max_seconds: float, limit_name: str) -> Iterator[None]:
    """Decoding's failures as the answers: :class:`AudioTooLong` (413) past the limit,
    :class:`UndecodableAudio` (422) for anything else the decoders or PyAV raise."""
    try:
        yield
    except TooLong as over:
        if over.declared is None:
            what = f"the audio lasts more than {max_seconds:g} s"
        else:
            what = f"the file declares {over.declared:.1f} s of audio"
        raise AudioTooLong(f"{what}, over the {max_seconds:g} s limit ({limit_name})") from None
    except media.AudioError as exc:
        raise UndecodableAudio(f"the body is not media we can decode: {exc.detail}") from exc
    except Exception as exc:  # PyAV raises many kinds on bad input; all mean the same to us,
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:  # but a write with no room
            raise WorkDiskFull(f"no room in WORK_DIR for the decoded audio: {exc}") from exc
        raise UndecodableAudio(
            f"the body is not a media file with audio we can decode ({type(exc).__name__}: {exc})"
        ) from exc


def _decode(data: BinaryIO, max_seconds: float, capacity: int | None) -> tuple[np.ndarray, int]:
    """One pass over ``data``: the audio in an array of ``capacity`` samples (``None``: of
    the declared duration, once it is checked against the limit) and the samples counted."""
    max_samples = math.floor(max_seconds * SAMPLE_RATE)
    with media.open_media(data) as container:
        stream = media.audio_stream(container)
        if capacity is None:
            capacity = 0
            declared = media.declared_seconds(container, stream)
            if declared is not None:
                slack = media.DECLARED_SLACK_S
                if declared > max_seconds + slack:
                    raise TooLong(max_seconds, declared)
                capacity = min(max_samples, math.ceil((declared + slack) * SAMPLE_RATE))
        audio = np.empty(capacity, dtype=np.float32)
        count = 0

        def take(samples: np.ndarray) -> None:
            """Into ``audio`` as far as it fits; beyond it, only counted."""
            nonlocal count
            end = count + samples.shape[0]
            if end > max_samples:
                raise TooLong(max_seconds)
            if end <= audio.shape[0]:
                np.multiply(samples, 1 / 32768, out=audio[count:end], casting="unsafe")
            elif count < audio.shape[0]:
                fits = audio.shape[0] - count
                np.multiply(samples[:fits], 1 / 32768, out=audio[count:], casting="unsafe")
            count = end

        media.decode(container, stream, take)
        return audio, count


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _parameters(content_type: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params
