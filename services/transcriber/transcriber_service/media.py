"""Decode downloaded media to 16 kHz mono 16-bit PCM on disk, with PyAV
(through ``transcription_core.audio.pcm_file``, which the model server's OpenAI endpoint
uses too for an uploaded file).

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

from dataclasses import dataclass
from pathlib import Path

from transcriber_service.errors import MediaError
from transcription_core.audio.decode import AudioError
from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.audio.pcm_file import decode_to_pcm
from transcription_core.status import FailureReason


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
        pcm = decode_to_pcm(src, dest, max_seconds=max_duration_s, channel=channel)
    except AudioError as exc:
        raise MediaError(exc.reason, exc.detail) from exc
    if pcm.num_samples == pcm.leading_samples:
        dest.unlink(missing_ok=True)
        raise MediaError(
            FailureReason.MEDIA_UNDECODABLE,
            f"no audio could be decoded from the {pcm.codec} stream",
        )
    declared = pcm.declared_s
    decoded_s = pcm.num_samples / SAMPLE_RATE
    truncated = pcm.decoded.truncated
    if declared is not None and decoded_s < declared - max(2.0, 0.05 * declared):
        truncated = True
    return DecodedAudio(
        path=dest,
        num_samples=pcm.num_samples,
        container_format=pcm.container_format,
        codec=pcm.codec,
        source_sample_rate=pcm.source_sample_rate,
        source_channels=pcm.source_channels,
        declared_duration_s=declared,
        start_offset_s=pcm.leading_samples / SAMPLE_RATE,
        decode_errors=pcm.decoded.errors,
        truncated=truncated,
    )
