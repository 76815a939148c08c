"""Decode downloaded media to 16 kHz mono 16-bit PCM on disk, with PyAV
(through ``transcription_core.audio.decode``, the decoding loop the model server uses too).

:func:`decode_to_pcm_file` demuxes the file's audio stream (the best one, as FFmpeg ranks
them; video and other streams are skipped by the demuxer and never decoded), resamples each
decoded frame with ``av.AudioResampler(format="s16", layout="mono", rate=16000)`` and appends
it to a raw PCM file (little-endian int16, no header). Memory stays flat whatever the media's
length; the file is 32 KB per second of audio (115 MB for an hour). The rest of the worker
reads spans back with ``transcription_core.audio.pcm.read_pcm``.

It is synchronous and CPU-bound: the worker calls it through ``asyncio.to_thread``.

Failures (all :class:`~transcriber_service.errors.MediaError`):

* ``MEDIA_UNDECODABLE``: FFmpeg does not recognise the file (a text file named ``.mp3``),
  or it is in a format we do not open (a playlist: see ``ALLOWED_FORMATS`` there), the audio
  codec has no decoder, or not one sample of audio decodes.
* ``NO_AUDIO_FOUND``: the file is media but has no audio stream (a silent screen capture).
  Audio that holds no speech is the chunker's finding (``transcription_core.audio.chunking``),
  not this module's.
* ``MEDIA_TOO_LARGE``: the duration the container declares, or the audio decoded so far, is
  over ``max_duration_s``.

Damaged files: packets that fail to decode are skipped, as the ``ffmpeg`` command line does
(counted in ``DecodedAudio.decode_errors``). A file cut off part way (a truncated upload)
keeps what decodes: a demuxer error or an early end of file ends the audio there, the
prefix is the job's audio, and ``truncated=True`` says so when the container declared more
(or the read failed). We transcribe what there is rather than fail a job whose file plays,
as far as it goes, in any player. A file cut off so early that nothing decodes, or an MP4
whose index (``moov``) was in the lost part, is ``MEDIA_UNDECODABLE``. Mostly-garbage input, more
failed packets than good ones past a small allowance, is ``MEDIA_UNDECODABLE`` too.

Timeline: sample ``i`` of the PCM file is at ``i / 16000`` seconds of the media. Audio that
starts later than the container (an audio track that begins after the video) is preceded by
that much silence so the timeline holds; gaps inside the stream are not reconstructed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transcriber_service.errors import MediaError
from transcription_core.audio.decode import (
    DECLARED_SLACK_S,
    AudioError,
    audio_stream,
    declared_seconds,
    decode,
    open_media,
)
from transcription_core.audio.pcm import PCM_DTYPE, SAMPLE_RATE, SAMPLE_WIDTH
from transcription_core.status import FailureReason

#: A later start than this puts silence first (less is encoder delay, not a late track).
_MIN_START_OFFSET_S = 0.05


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded PCM file and what we learnt about its source."""

    path: Path
    #: Samples in the PCM file (16 kHz mono), leading silence included.
    num_samples: int
    #: FFmpeg's name for the container, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``.
    container_format: str
    #: FFmpeg's name for the audio codec that was decoded, e.g. ``"aac"``.
    codec: str
    source_sample_rate: int
    source_channels: int
    #: The duration the container declares, if it declares one.
    declared_duration_s: float | None
    #: Silence put before the first sample because the audio starts after the container.
    start_offset_s: float = 0.0
    #: Packets that failed to decode and were skipped.
    decode_errors: int = 0
    #: Decoding stopped at a read error, or ended well short of the declared duration:
    #: the file is probably cut off. Informational; the decoded prefix is the audio.
    truncated: bool = False

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE


def decode_to_pcm_file(
    src: Path, dest: Path, *, max_duration_s: float, channel: int | None = None
) -> DecodedAudio:
    """Decode the audio of ``src`` into ``dest`` as 16 kHz mono s16le PCM: all channels
    mixed down, or only ``channel`` (0 first; a job's ``multichannel``).

    Raises :class:`MediaError` (see the module docstring); ``dest`` is removed then.
    A missing ``src`` is the caller's bug and raises ``FileNotFoundError``.
    """
    if not src.is_file():
        raise FileNotFoundError(src)
    try:
        with open_media(src) as container:
            stream = audio_stream(container)
            declared = declared_seconds(container, stream)
            if declared is not None and declared > max_duration_s + DECLARED_SLACK_S:
                raise MediaError(
                    FailureReason.MEDIA_TOO_LARGE,
                    f"the media is {_seconds(declared)} long, over the limit of "
                    f"{_seconds(max_duration_s)}",
                )
            writer = _PcmWriter(dest, max_samples=math.floor(max_duration_s * SAMPLE_RATE))
            with writer:
                decoded = decode(
                    container, stream, writer.write, starts_at=writer.start_at, channel=channel
                )
            if writer.samples == 0 or writer.samples == writer.leading_samples:
                raise MediaError(
                    FailureReason.MEDIA_UNDECODABLE,
                    f"no audio could be decoded from the {stream.codec_context.name} stream",
                )
            decoded_s = writer.samples / SAMPLE_RATE
            truncated = decoded.truncated
            if declared is not None and decoded_s < declared - max(2.0, 0.05 * declared):
                truncated = True
            return DecodedAudio(
                path=dest,
                num_samples=writer.samples,
                container_format=container.format.name,
                codec=stream.codec_context.name,
                source_sample_rate=stream.codec_context.sample_rate,
                source_channels=stream.codec_context.channels,
                declared_duration_s=declared,
                start_offset_s=writer.leading_samples / SAMPLE_RATE,
                decode_errors=decoded.errors,
                truncated=truncated,
            )
    except AudioError as exc:
        dest.unlink(missing_ok=True)
        raise MediaError(exc.reason, exc.detail) from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


class _PcmWriter:
    """Append resampled frames to the PCM file, counting samples against the limit."""

    def __init__(self, path: Path, *, max_samples: int) -> None:
        self.path = path
        self.max_samples = max_samples
        self.samples = 0
        self.leading_samples = 0
        self._file = path.open("wb")

    def __enter__(self) -> _PcmWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def start_at(self, offset_s: float) -> None:
        """Put ``offset_s`` seconds of silence first (the audio starts late)."""
        if offset_s < _MIN_START_OFFSET_S:
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
            limit = self.max_samples / SAMPLE_RATE
            raise MediaError(
                FailureReason.MEDIA_TOO_LARGE,
                f"the audio is longer than the limit of {_seconds(limit)}",
            )


def _seconds(value: float) -> str:
    return f"{round(value, 1):g} s"
