"""Any media's audio decoded into a 16 kHz mono s16le PCM file, within a duration limit.

The worker decodes a job's media this way (``transcriber_service/media.py``), and the
model server a file uploaded to its OpenAI endpoint (``model_server/audio.py``): memory
stays flat whatever the media's length (one decoded frame at a time), the file takes
32 KB a second of audio (4 h: 461 MB), and the rest reads spans back with
:func:`~transcription_core.audio.pcm.read_pcm` (and plans chunks from it with
:func:`~transcription_core.audio.chunking.plan_chunks`).

:func:`decode_to_pcm` refuses a container that declares more than the limit before any
decoding and stops as soon as the samples pass it (:class:`TooLong`); on any failure the
PCM file is removed. Each service words its own answer from the exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from transcription_core.audio.decode import (
    DECLARED_SLACK_S,
    AudioError,
    Decoded,
    audio_stream,
    declared_seconds,
    decode,
    open_media,
)
from transcription_core.audio.pcm import PCM_DTYPE, SAMPLE_RATE, SAMPLE_WIDTH
from transcription_core.status import FailureReason

#: A later start than this puts silence first (less is encoder delay, not a late track).
MIN_START_OFFSET_S = 0.05


class TooLong(AudioError):
    """Over the limit (``MEDIA_TOO_LARGE``): by the duration the container ``declared``,
    or (``declared`` None) by the samples decoded."""

    def __init__(self, limit_s: float, declared: float | None = None) -> None:
        if declared is None:
            detail = f"the audio is longer than the limit of {seconds_text(limit_s)}"
        else:
            detail = (
                f"the media is {seconds_text(declared)} long, over the limit of "
                f"{seconds_text(limit_s)}"
            )
        super().__init__(FailureReason.MEDIA_TOO_LARGE, detail)
        self.limit_s = limit_s
        self.declared = declared


@dataclass(frozen=True)
class PcmFile:
    """A decoded PCM file and what decoding learnt about its source."""

    path: Path
    #: Samples in the file (16 kHz mono), leading silence included.
    num_samples: int
    #: Silence put before the first decoded sample (the audio starts after the container).
    leading_samples: int
    #: The duration the container declares, if it declares one.
    declared_s: float | None
    #: FFmpeg's names for the container and the audio codec decoded.
    container_format: str
    codec: str
    source_sample_rate: int
    source_channels: int
    decoded: Decoded


def decode_to_pcm(
    source: Path | BinaryIO,
    dest: Path,
    *,
    max_seconds: float,
    channel: int | None = None,
    keep_timeline: bool = True,
) -> PcmFile:
    """Decode the best audio stream of ``source`` into ``dest``: all channels mixed down,
    or only ``channel`` (0 first). ``keep_timeline``: audio that starts after the
    container is preceded by that much silence, so sample ``i`` is at ``i / 16000`` s of
    the media (the worker's jobs); else the file starts with the first decoded sample (as
    faster-whisper's ``decode_audio``: the model server).

    :class:`TooLong` past ``max_seconds``, :class:`AudioError` for media we cannot
    decode; ``dest`` is removed on any failure.
    """
    try:
        with open_media(source) as container:
            stream = audio_stream(container)
            declared = declared_seconds(container, stream)
            if declared is not None and declared > max_seconds + DECLARED_SLACK_S:
                raise TooLong(max_seconds, declared)
            writer = _PcmWriter(dest, max_seconds)
            with writer:
                decoded = decode(
                    container,
                    stream,
                    writer.write,
                    starts_at=writer.start_at if keep_timeline else None,
                    channel=channel,
                )
            return PcmFile(
                path=dest,
                num_samples=writer.samples,
                leading_samples=writer.leading_samples,
                declared_s=declared,
                container_format=container.format.name,
                codec=stream.codec_context.name,
                source_sample_rate=stream.codec_context.sample_rate,
                source_channels=stream.codec_context.channels,
                decoded=decoded,
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def seconds_text(value: float) -> str:
    return f"{round(value, 1):g} s"


class _PcmWriter:
    """Append resampled frames to the PCM file, counting samples against the limit."""

    def __init__(self, path: Path, limit_s: float) -> None:
        self.path = path
        self.limit_s = limit_s
        self.max_samples = math.floor(limit_s * SAMPLE_RATE)
        self.samples = 0
        self.leading_samples = 0
        self._file = path.open("wb")

    def __enter__(self) -> _PcmWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def start_at(self, offset_s: float) -> None:
        """Put ``offset_s`` seconds of silence first (the audio starts late)."""
        if offset_s < MIN_START_OFFSET_S:
            return
        leading = round(offset_s * SAMPLE_RATE)
        self._count(leading)
        self.leading_samples = leading
        zeros = bytes(SAMPLE_RATE * SAMPLE_WIDTH)
        whole, rest = divmod(leading, SAMPLE_RATE)
        for _ in range(whole):
            self._file.write(zeros)
        self._file.write(zeros[: rest * SAMPLE_WIDTH])

    def write(self, samples: np.ndarray) -> None:
        self._count(samples.shape[-1])
        self._file.write(samples.astype(PCM_DTYPE, copy=False).tobytes())

    def _count(self, samples: int) -> None:
        self.samples += samples
        if self.samples > self.max_samples:
            raise TooLong(self.limit_s)
