"""Cut decoded audio into chunks of at most 30 s at pauses in the speech.

The one chunker: the worker plans a job's chunks from its PCM file, the model server's
OpenAI endpoint a long upload's from its samples (:func:`plan_chunks` takes either); both
run the same analysis and planner.

The model hears one chunk at a time, so a cut through a word garbles it twice. We find the
speech with the Silero voice activity detector that faster-whisper bundles and cut only in
the pauses between speech; the pause where a cut is made is left out, so the model never
hears it.

Whisper pads every chunk to its 30 s window, so the model's cost grows with the number of
chunks, not with their length. Chunks are therefore packed as close to 30 s as the pauses
allow, and a pause inside a chunk stays in it whatever its length: Whisper transcribes the
speech on both sides of up to 20 s of silence or hiss in one window without inventing words
in it, and the pause's samples cost nothing in a window that is padded to 30 s anyway. On
the 10.7-minute recording of ``bench/scenarios/long_media.py`` (pauses of 0.8 to 3.2 s between its
pieces) this gives 28 chunks where closing a chunk at every pause of 2 s or more gave 50.
Dropping the long pauses inside a chunk instead, as faster-whisper's batched pipeline does,
gave 20 chunks but no fewer 30 s windows (Whisper put off the last sentence of 19 of them to
a window of its own) and a worse word error rate with tiny.en (4.36 % against 3.86 %).
Packing to less than 30 s does not give Whisper room to finish the last sentence either:
``max_chunk_s`` of 28, 26, 24, 22 and 20 s gave 38, 47, 38, 50 and 56 windows where 30 s
gives 38, and word error rates of 3.93 to 9.71 % (more cuts through continuous reading).

1. **Analyse** (:func:`analyse_pcm`, :func:`analyse_audio`): one pass over the audio in
   30 s windows (a PCM file's read with plain reads, so a two-hour file never sits in
   memory as one float array, nor as memmapped pages, which count as resident memory
   too); the window also bounds the VAD model's working memory (about 45 MB for 30 s).
   For every 512-sample frame (32 ms) the
   VAD's speech probability, with the detector's LSTM state carried from window to window,
   which gives exactly what one call on the whole file would; and for every 10 ms hop the
   mean-square energy. Both arrays are small (2 hours: 0.9 MB of probabilities, 2.9 MB of
   energies), and a speech region that crosses a window edge is simply one run of frames
   in them.
2. **Speech regions**: faster-whisper's rules (``get_speech_timestamps``: speech starts at
   ``threshold``, ends after ``min_silence_duration_ms`` below ``neg_threshold``, regions
   shorter than ``min_speech_duration_ms`` dropped, ``speech_pad_ms`` of padding each side,
   a gap shorter than two paddings split in its middle), on our options
   (:data:`DEFAULT_VAD_OPTIONS`: a 300 ms pause separates regions).
3. **Split** a region longer than ``max_chunk_s`` at its quietest point: the 100 ms window
   of lowest energy between half and all of ``max_chunk_s`` from the piece's start.
4. **Pack** regions greedily into chunks: a chunk grows region by region, pauses and
   all, as long as it stays within ``max_chunk_s``; it is closed only where the next
   region would not fit. So every cut lies in a pause, or at the quietest point of speech
   that had no pause for ``max_chunk_s``, and no two neighbouring chunks would fit in one
   (greedy packing of a sequence gives the fewest chunks these cut points allow).

Deterministic: the same PCM file gives the same chunks (the window size does not matter;
only an onnxruntime build on another CPU could round differently). A retried job can
therefore match chunks it saved by ``index`` and sample boundaries.

No speech at all gives no chunks (the worker fails the job with ``NO_AUDIO_FOUND``; the
model server answers an empty transcript).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper.vad import VadOptions, get_vad_model

from transcription_core.audio.pcm import PCM_DTYPE, SAMPLE_RATE, pcm_num_samples, to_float32

#: Samples per VAD frame (Silero's window at 16 kHz).
VAD_FRAME = 512
#: Samples of the context the Silero model sees before each frame.
_VAD_CONTEXT = 64
#: Samples per energy hop (10 ms).
ENERGY_HOP = 160
#: Window sizes are a multiple of both frame sizes (2560 samples, 0.16 s).
_WINDOW_UNIT = int(np.lcm(VAD_FRAME, ENERGY_HOP))
#: Hops in the moving window that finds the quietest point of a long region (100 ms).
_QUIET_WINDOW_HOPS = 10

DEFAULT_VAD_OPTIONS = VadOptions(
    threshold=0.5,
    neg_threshold=None,
    min_speech_duration_ms=150,
    min_silence_duration_ms=300,
    speech_pad_ms=200,
)


@dataclass(frozen=True, order=True)
class Chunk:
    """Samples ``[start_sample, end_sample)`` of the media's 16 kHz PCM, the ``index``-th cut."""

    index: int
    start_sample: int
    end_sample: int

    @property
    def num_samples(self) -> int:
        return self.end_sample - self.start_sample

    @property
    def start_s(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end_sample / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechAnalysis:
    """What :func:`analyse_pcm` learns about a PCM file; the input of the pure planner."""

    num_samples: int
    #: Speech probability of each 512-sample frame (the last one padded with zeros).
    speech_probs: np.ndarray
    #: Mean-square energy of each 160-sample hop, samples scaled to [-1, 1) (float32).
    energy: np.ndarray


def plan_chunks(
    audio: Path | np.ndarray,
    *,
    max_chunk_s: float = 30.0,
    vad_options: VadOptions | None = None,
    window_s: float = 30.0,
) -> list[Chunk]:
    """The chunks of speech, in order (none: no speech), in a 16 kHz mono s16le PCM file
    (a :class:`~pathlib.Path`) or in 16 kHz mono float32 samples."""
    if isinstance(audio, Path):
        analysis = analyse_pcm(audio, window_s=window_s)
    else:
        analysis = analyse_audio(audio, window_s=window_s)
    return chunks_from_analysis(analysis, max_chunk_s=max_chunk_s, vad_options=vad_options)


def analyse_pcm(pcm_path: Path, *, window_s: float = 30.0) -> SpeechAnalysis:
    """Speech probabilities and energies of a PCM file, read in windows of ``window_s``."""
    num_samples = pcm_num_samples(pcm_path)
    window = _window(window_s)
    with pcm_path.open("rb") as pcm:
        # Plain reads, not a memmap: mapped pages would count in our resident memory
        # until the end, so it would grow with the file after all.
        windows = (
            to_float32(np.fromfile(pcm, dtype=PCM_DTYPE, count=window))
            for _ in range(0, num_samples, window)
        )
        return _analyse(windows, num_samples)


def analyse_audio(audio: np.ndarray, *, window_s: float = 30.0) -> SpeechAnalysis:
    """Speech probabilities and energies of float32 samples, in windows of ``window_s``."""
    window = _window(window_s)
    windows = (audio[start : start + window] for start in range(0, audio.shape[0], window))
    return _analyse(windows, audio.shape[0])


def _window(window_s: float) -> int:
    return max(1, round(window_s * SAMPLE_RATE / _WINDOW_UNIT)) * _WINDOW_UNIT


def _analyse(windows: Iterable[np.ndarray], num_samples: int) -> SpeechAnalysis:
    vad = _StreamingVad()
    probs: list[np.ndarray] = []
    energy: list[np.ndarray] = []
    for audio in windows:
        probs.append(vad.probabilities(_pad_to(audio, VAD_FRAME)))
        hops = _pad_to(audio, ENERGY_HOP).reshape(-1, ENERGY_HOP).astype(np.float64)
        energy.append(np.mean(hops * hops, axis=1).astype(np.float32))
    return SpeechAnalysis(
        num_samples=num_samples,
        speech_probs=np.concatenate(probs) if probs else np.zeros(0, np.float32),
        energy=np.concatenate(energy) if energy else np.zeros(0, np.float32),
    )


def chunks_from_analysis(
    analysis: SpeechAnalysis,
    *,
    max_chunk_s: float = 30.0,
    vad_options: VadOptions | None = None,
) -> list[Chunk]:
    """Plan the chunks from an analysis (pure; see the module docstring for the rules)."""
    options = vad_options or DEFAULT_VAD_OPTIONS
    max_samples = int(max_chunk_s * SAMPLE_RATE)
    if max_samples < SAMPLE_RATE:
        raise ValueError("max_chunk_s must be at least 1 second")
    regions = speech_regions(analysis.speech_probs, analysis.num_samples, options)
    if not regions:
        return []
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        pieces.extend(split_at_quietest(start, end, analysis.energy, max_samples))
    spans = _pack(pieces, max_samples)
    return [Chunk(i, start, end) for i, (start, end) in enumerate(spans)]


def speech_regions(
    speech_probs: np.ndarray, num_samples: int, options: VadOptions
) -> list[tuple[int, int]]:
    """Padded speech regions as ``(start, end)`` samples, by faster-whisper's rules.

    The same state machine as ``faster_whisper.vad.get_speech_timestamps`` without its
    ``max_speech_duration_s`` cut (long regions are split by energy instead), run on
    probabilities computed window by window.
    """
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = SAMPLE_RATE * options.min_speech_duration_ms / 1000
    min_silence = SAMPLE_RATE * options.min_silence_duration_ms / 1000
    pad = int(SAMPLE_RATE * options.speech_pad_ms / 1000)

    regions: list[list[int]] = []
    triggered = False
    start = temp_end = 0
    for i, prob in enumerate(_floats(speech_probs)):
        position = VAD_FRAME * i
        if prob >= threshold and temp_end:
            temp_end = 0
        if prob >= threshold and not triggered:
            triggered = True
            start = position
            continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = position
            if position - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                regions.append([start, temp_end])
            triggered = False
            temp_end = 0
    if triggered and num_samples - start > min_speech:
        regions.append([start, num_samples])

    for i, region in enumerate(regions):
        if i == 0:
            region[0] = max(0, region[0] - pad)
        if i + 1 < len(regions):
            following = regions[i + 1]
            gap = following[0] - region[1]
            if gap < 2 * pad:
                region[1] += gap // 2
                following[0] -= gap - gap // 2
            else:
                region[1] += pad
                following[0] -= pad
        else:
            region[1] = min(num_samples, region[1] + pad)
    return [(min(s, num_samples), min(e, num_samples)) for s, e in regions if s < e]


def split_at_quietest(
    start: int, end: int, energy: np.ndarray, max_samples: int
) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into pieces of at most ``max_samples`` at its quietest points.

    Each cut is the middle of the 100 ms window of lowest energy between half and all of
    ``max_samples`` after the piece's start (the first such window on a tie).
    """
    pieces: list[tuple[int, int]] = []
    while end - start > max_samples:
        cut = _quietest_point(energy, start + max_samples // 2, start + max_samples)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _quietest_point(energy: np.ndarray, lo: int, hi: int) -> int:
    """The sample in ``[lo, hi]`` at the middle of the quietest 100 ms of ``energy``."""
    half = _QUIET_WINDOW_HOPS * ENERGY_HOP // 2
    first = -(-(lo - half) // ENERGY_HOP)  # first hop whose window starts at or after lo-half
    last = (hi - half) // ENERGY_HOP  # last hop whose window's middle is at or before hi
    first = max(first, 0)
    windows = np.lib.stride_tricks.sliding_window_view(
        energy[first : last + _QUIET_WINDOW_HOPS], _QUIET_WINDOW_HOPS
    )[: max(0, last - first + 1)]
    if len(windows) == 0:
        return hi
    best = first + int(np.argmin(windows.mean(axis=1)))
    return min(max(best * ENERGY_HOP + half, lo), hi)


def _pack(pieces: list[tuple[int, int]], max_samples: int) -> list[tuple[int, int]]:
    """Consecutive pieces, each at most ``max_samples`` long, packed greedily into spans."""
    spans: list[tuple[int, int]] = []
    chunk_start, chunk_end = pieces[0]
    for start, end in pieces[1:]:
        if end - chunk_start > max_samples:
            spans.append((chunk_start, chunk_end))
            chunk_start = start
        chunk_end = end
    spans.append((chunk_start, chunk_end))
    return spans


class _StreamingVad:
    """Silero VAD over consecutive windows, its state carried from one to the next.

    Mirrors ``faster_whisper.vad.SileroVADModel.__call__`` (each 512-sample frame is
    preceded by the last 64 samples of the frame before it; the LSTM state runs on) but
    keeps the state between calls, so windowed probabilities equal whole-file ones.
    """

    _BATCH = 10_000

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_VAD_CONTEXT, dtype=np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        frames = audio.reshape(-1, VAD_FRAME)
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        context = np.empty((len(frames), _VAD_CONTEXT), dtype=np.float32)
        context[0] = self._context
        context[1:] = frames[:-1, -_VAD_CONTEXT:]
        batched = np.concatenate([context, frames], axis=1)
        self._context = frames[-1, -_VAD_CONTEXT:].copy()
        out: list[np.ndarray] = []
        for i in range(0, len(batched), self._BATCH):
            probs, self._h, self._c = self._session.run(
                None, {"input": batched[i : i + self._BATCH], "h": self._h, "c": self._c}
            )
            out.append(np.asarray(probs, dtype=np.float32).ravel())
        return np.concatenate(out)


def _floats(values: np.ndarray, block: int = 8192) -> Iterator[float]:
    """The values as Python floats, a block at a time (not a list as long as the file)."""
    for start in range(0, len(values), block):
        yield from values[start : start + block].tolist()


def _pad_to(audio: np.ndarray, multiple: int) -> np.ndarray:
    rest = len(audio) % multiple
    return audio if rest == 0 else np.pad(audio, (0, multiple - rest))


__all__ = [
    "DEFAULT_VAD_OPTIONS",
    "Chunk",
    "SpeechAnalysis",
    "analyse_audio",
    "analyse_pcm",
    "chunks_from_analysis",
    "plan_chunks",
    "speech_regions",
    "split_at_quietest",
]
