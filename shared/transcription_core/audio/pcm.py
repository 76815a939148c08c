"""The audio every service hears: 16 kHz mono signed 16-bit little-endian PCM.

The worker keeps a job's decoded audio as a raw PCM file (no header) and reads spans of it
back; the model server takes a chunk as a PCM body (:data:`PCM_CONTENT_TYPE`). Whisper
takes float32 in [-1, 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transcription_core.predict import PCM_CONTENT_TYPE

#: Sample rate of all audio we hand to Whisper or its VAD.
SAMPLE_RATE = 16_000
#: Bytes per PCM sample: signed 16-bit, mono.
SAMPLE_WIDTH = 2
PCM_DTYPE = np.dtype("<i2")

__all__ = [
    "PCM_CONTENT_TYPE",
    "PCM_DTYPE",
    "SAMPLE_RATE",
    "SAMPLE_WIDTH",
    "pcm_num_samples",
    "read_pcm",
    "read_pcm_float32",
    "to_float32",
]


def to_float32(samples: np.ndarray) -> np.ndarray:
    """s16 samples as float32 in [-1, 1), what Whisper and the VAD take."""
    return samples.astype(np.float32) / 32768.0


def pcm_num_samples(path: Path) -> int:
    """The number of samples in a PCM file."""
    return path.stat().st_size // SAMPLE_WIDTH


def read_pcm(path: Path, start_sample: int, end_sample: int) -> bytes:
    """Samples ``[start_sample, end_sample)`` of a PCM file as s16le bytes.

    The span is clipped to the file; only the span is read, however long the file.
    """
    if start_sample < 0 or end_sample < start_sample:
        raise ValueError(f"not a span of samples: [{start_sample}, {end_sample})")
    with path.open("rb") as pcm:
        pcm.seek(start_sample * SAMPLE_WIDTH)
        return pcm.read((end_sample - start_sample) * SAMPLE_WIDTH)


def read_pcm_float32(path: Path, start_sample: int, end_sample: int) -> np.ndarray:
    """Samples ``[start_sample, end_sample)`` as float32 in [-1, 1), what Whisper takes."""
    return to_float32(np.frombuffer(read_pcm(path, start_sample, end_sample), dtype=PCM_DTYPE))
