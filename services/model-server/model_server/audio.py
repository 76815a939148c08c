"""Request bodies to 16 kHz mono float32 samples, and long audio to ≤ 30 s pieces.

All of it is CPU work: the routes call it through a worker thread.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from faster_whisper.audio import decode_audio
from faster_whisper.vad import VadOptions, get_speech_timestamps

from model_server.errors import EmptyAudio, UndecodableAudio

SAMPLE_RATE = 16_000
PCM_CONTENT_TYPE = "audio/x-pcm-s16le"
#: Longest piece a file is cut into: one Whisper window.
PIECE_SECONDS = 30.0


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


def decode_media(data: bytes | BinaryIO) -> np.ndarray:
    """Any audio or video file PyAV can read, resampled to 16 kHz mono."""
    if isinstance(data, bytes):
        if not data:
            raise EmptyAudio("the request body is empty: send an audio file")
        data = io.BytesIO(data)
    try:
        audio = np.asarray(decode_audio(data, sampling_rate=SAMPLE_RATE), dtype=np.float32)
    except Exception as exc:  # PyAV raises many kinds on bad input; all mean the same to us.
        raise UndecodableAudio(
            f"the body is not a media file with audio we can decode ({type(exc).__name__}: {exc})"
        ) from exc
    if audio.size == 0:
        raise EmptyAudio("the file decodes to no audio samples")
    return audio


def split_on_silence(audio: np.ndarray, max_seconds: float = PIECE_SECONDS) -> list[slice]:
    """Cut ``audio`` into pieces of at most ``max_seconds``, at the longest pauses.

    Audio that fits in one piece is one piece. Longer audio goes through the Silero VAD
    (faster-whisper's, with the settings of its batched pipeline), which finds speech
    regions of at most ``max_seconds``. Regions are gathered into a piece until the next
    one would not fit; the piece is then cut at the widest pause between its regions, so
    a cut falls between sentences rather than between words. A piece runs from the start
    of its first region to the end of its last, pauses included, so times stay those of
    the file. Stretches without speech between pieces are not transcribed; no speech at
    all gives no pieces.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    if audio.shape[0] <= limit:
        return [slice(0, audio.shape[0])]
    regions = get_speech_timestamps(
        audio,
        VadOptions(max_speech_duration_s=max_seconds, min_silence_duration_ms=160),
        sampling_rate=SAMPLE_RATE,
    )
    return pack_regions([(int(r["start"]), int(r["end"])) for r in regions], limit)


def pack_regions(regions: list[tuple[int, int]], limit: int) -> list[slice]:
    """Gather sorted ``(start, end)`` speech regions into spans of at most ``limit``,
    cutting at the widest pauses (see :func:`split_on_silence`)."""
    pieces: list[slice] = []
    current: list[tuple[int, int]] = []
    for region in regions:
        current.append(region)
        while len(current) > 1 and current[-1][1] - current[0][0] > limit:
            # Cut before the region that follows the widest pause (the latest, on a tie).
            cut = max(range(1, len(current)), key=lambda k: (current[k][0] - current[k - 1][1], k))
            pieces.append(slice(current[0][0], current[cut - 1][1]))
            current = current[cut:]
    if current:
        pieces.append(slice(current[0][0], current[-1][1]))
    return pieces


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _parameters(content_type: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params
