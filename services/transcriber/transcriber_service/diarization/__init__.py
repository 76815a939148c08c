"""Who spoke when: speaker turns of a job's decoded audio, for its ``diarize`` option.

Installed with the ``diarize`` extra (``pip install 'transcription-service[diarize]'``):
Resemblyzer's speaker encoder (a 3-layer LSTM, its 17 MB of weights inside the package:
nothing is downloaded at run time) on PyTorch (its mel spectrogram computed here, in NumPy), and
SciPy's hierarchical clustering. Only this package needs the extra (tests/deploy checks it); the
worker imports it at its first ``diarize`` job, where
:func:`transcription_core.speakers.diarization_installed` says the extra is there.

The steps, on the 16 kHz PCM file the worker decoded the media to, read region by region, a
region of a minute or more in pieces of 30 s (memory does not grow with the media, but for
the embeddings, 1 KiB per 0.4 s of speech):

1. Speech regions from the Silero VAD analysis the chunk planner already made (less
   padding, shorter pauses: a change of speaker is often a short pause).
2. An embedding (256 floats, unit length) of each 1.6 s window of speech, every
   :data:`STEP_S` seconds; a region shorter than a window is one window, zero-padded.
3. Agglomerative clustering of the embeddings (average linkage, cosine distance), cut at
   :data:`THRESHOLD` or at the speaker count the job gives (exact, or bounded by its
   min/max and ``DIARIZE_MAX_SPEAKERS``); then each window goes to its nearest cluster
   centre. At most :data:`MAX_CLUSTERED` windows are clustered (evenly spaced); the rest
   join the nearest centre.
4. Each stretch of speech takes the speaker of the window whose centre is nearest, and
   consecutive stretches of one speaker in one region are one turn.

:func:`transcription_core.speakers.label_transcript` then gives the transcript's words and
segments their speakers. The numbers chosen here mean nothing; that function numbers the
speakers in order of first speech.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper.vad import VadOptions

from transcription_core.audio.chunking import SpeechAnalysis, speech_regions
from transcription_core.audio.pcm import SAMPLE_RATE, read_pcm_float32
from transcription_core.speakers import SpeakerHint, SpeakerTurn

#: Seconds between the starts of two embedding windows.
STEP_S = 0.4
#: Mel frames per window (10 ms each): the encoder's 1.6 s partial utterance.
WINDOW_FRAMES = 160
#: Longest stretch of audio read and embedded at once (a longer region is cut).
PIECE_S = 30.0
#: Regions shorter than this are not embedded; they take the nearest turn's speaker.
MIN_REGION_S = 0.4
#: Average-linkage cosine distance at which two clusters stay apart (without an exact
#: count): measured on the benchmark's conversations (bench/README.md, diarization).
THRESHOLD = 0.4
#: Fewest windows a speaker has (1.2 s of speech): smaller clusters join the nearest one.
MIN_SPEAKER_WINDOWS = 3
#: Most windows clustered at once (the linkage's memory is quadratic in them: 8 MB here).
MAX_CLUSTERED = 1500
#: The VAD's speech regions for diarization: short pauses split, little padding.
VAD_OPTIONS = VadOptions(
    threshold=0.5,
    neg_threshold=None,
    min_speech_duration_ms=150,
    min_silence_duration_ms=150,
    speech_pad_ms=40,
)


def _weights() -> Path:
    """The encoder's weights inside the resemblyzer package, found without importing it:
    its ``__init__`` imports webrtcvad, which imports ``pkg_resources`` (gone from recent
    setuptools, deprecated before), for a silence trimmer this module does not use."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the diarize extra is not installed (no resemblyzer package)")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def _encoder() -> Any:
    """Resemblyzer's speaker encoder: 40 mel bands in, an LSTM of 3 layers of 256, a
    linear layer and ReLU, unit-length 256-float embeddings out (its ``VoiceEncoder``)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            raw = self.relu(self.linear(hidden[-1]))
            unit: torch.Tensor = raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-9)
            return unit

    encoder = Encoder()
    checkpoint = torch.load(_weights(), map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    # The training loss's two scalars (similarity_weight, similarity_bias) are not used.
    encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
    return encoder.eval()


#: The encoder's spectrogram: 25 ms windows (400 samples) every 10 ms, 40 mel bands.
N_FFT = 400
HOP = 160
N_MELS = 40


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear to 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
    return hz


def _mel_filters() -> np.ndarray:
    """librosa's ``filters.mel(sr=16000, n_fft=400, n_mels=40)``: triangles on Slaney's
    scale from 0 Hz to 8 kHz, each normalized to unit area (``norm="slaney"``)."""
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], N_MELS + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.asarray(weights)


_FILTERS = _mel_filters()
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def mel_frames(samples: np.ndarray) -> np.ndarray:
    """The encoder's input: a 40-band mel power spectrogram, one row per 10 ms frame, as
    Resemblyzer computes it (librosa's ``melspectrogram``: centred frames, zero-padded).
    In NumPy: librosa's first call compiles with numba, 220 MB of memory for good."""
    padded = np.pad(samples.astype(np.float64), N_FFT // 2)
    count = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, (count, N_FFT), (padded.strides[0] * HOP, padded.strides[0]), writeable=False
    )
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return np.asarray((power @ _FILTERS.T).astype(np.float32))


class Diarizer:
    """The speaker encoder, loaded once; :meth:`turns` may run in several threads at once
    (inference keeps no state)."""

    def __init__(self, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self._encoder = _encoder()
        self._torch = torch

    def turns(
        self, pcm: Path, analysis: SpeechAnalysis, hint: SpeakerHint, ceiling: int
    ) -> list[SpeakerTurn]:
        """The speaker turns of the PCM file ``pcm`` (16 kHz mono s16le), whose VAD
        analysis is ``analysis``; at most ``ceiling`` speakers."""
        regions = _pieces(speech_regions(analysis.speech_probs, analysis.num_samples, VAD_OPTIONS))
        windows, embeddings = self._embed(pcm, regions)
        if not windows:
            return []
        labels = cluster(np.stack(embeddings), hint, ceiling)
        return turns_from_windows(regions, windows, labels)

    def _embed(
        self, pcm: Path, regions: Sequence[tuple[int, int]]
    ) -> tuple[list[tuple[int, float]], list[np.ndarray]]:
        """Each window as (its region's index, its centre in seconds), and its embedding."""
        windows: list[tuple[int, float]] = []
        embeddings: list[np.ndarray] = []
        step = round(STEP_S * 100)
        for index, (start, end) in enumerate(regions):
            if (end - start) / SAMPLE_RATE < MIN_REGION_S:
                continue
            samples = read_pcm_float32(pcm, start, end)
            mel = mel_frames(_normalized(samples))
            if len(mel) < WINDOW_FRAMES:
                mel = np.pad(mel, ((0, WINDOW_FRAMES - len(mel)), (0, 0)))
            offsets = list(range(0, len(mel) - WINDOW_FRAMES + 1, step))
            if offsets[-1] + WINDOW_FRAMES < len(mel):
                offsets.append(len(mel) - WINDOW_FRAMES)
            batch = np.stack([mel[o : o + WINDOW_FRAMES] for o in offsets])
            with self._torch.no_grad():
                out = self._encoder(self._torch.from_numpy(batch)).numpy()
            length = (end - start) / SAMPLE_RATE
            for offset, embedding in zip(offsets, out, strict=True):
                centre = min(offset / 100 + WINDOW_FRAMES / 200, length / 2 + offset / 100)
                windows.append((index, start / SAMPLE_RATE + centre))
                embeddings.append(embedding)
        return windows, embeddings


def _pieces(regions: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The regions, each longer than :data:`PIECE_S` cut into pieces of that length (the
    last one longer, up to twice): what is read and embedded at once stays bounded, however
    long a stretch without a pause (music, noise) runs."""
    piece = round(PIECE_S * SAMPLE_RATE)
    out: list[tuple[int, int]] = []
    for start, end in regions:
        while end - start >= 2 * piece:
            out.append((start, start + piece))
            start += piece
        out.append((start, end))
    return out


def _normalized(samples: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Quiet speech raised to ``target_dbfs`` (as the encoder was trained); never lowered."""
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms <= 0:
        return samples
    gain = 10 ** (target_dbfs / 20) / rms
    return samples * gain if gain > 1 else samples


def cluster(embeddings: np.ndarray, hint: SpeakerHint, ceiling: int) -> np.ndarray:
    """A cluster number for each embedding (rows of unit length)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    low, high = hint.bounds(ceiling)
    if n == 1 or high == 1:
        return np.zeros(n, dtype=np.int64)
    stride = max(1, -(-n // MAX_CLUSTERED))
    sample = embeddings[::stride]
    tree = linkage(sample, method="average", metric="cosine")
    # Cut the tree where clusters are THRESHOLD apart. A cluster of fewer than
    # MIN_SPEAKER_WINDOWS windows (a cough, a laugh, a word at a turn's edge) is no
    # speaker: its windows join the nearest speaker. With fewer speakers than ``low``, cut
    # finer; with more than ``high``, keep the ``high`` who speak most.
    cut = len(set(fcluster(tree, THRESHOLD, criterion="distance").tolist()))
    while True:
        labels = fcluster(tree, cut, criterion="maxclust") - 1
        sizes = np.bincount(labels) * stride
        speakers = np.flatnonzero(sizes >= MIN_SPEAKER_WINDOWS)
        if len(speakers) >= low or cut >= len(sample):
            break
        cut += 1
    if len(speakers) == 0:
        speakers = np.arange(len(sizes))
    speakers = speakers[np.argsort(-sizes[speakers], kind="stable")][:high]
    centres = _centres(sample, labels)[np.sort(speakers)]
    return np.asarray(np.argmax(embeddings @ centres.T, axis=1), dtype=np.int64)


def _centres(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The unit-length mean of each cluster 0, 1, ... (labels numbered without gaps)."""
    centres = np.stack([embeddings[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    return np.asarray(centres / np.maximum(norms, 1e-9))


def turns_from_windows(
    regions: Sequence[tuple[int, int]],
    windows: Sequence[tuple[int, float]],
    labels: np.ndarray,
) -> list[SpeakerTurn]:
    """Each region cut where the nearest window centre changes, the pieces labelled as
    that window; consecutive pieces of one speaker joined. A region without a window (too
    short) takes the speaker of the nearest window in time."""
    by_region: dict[int, list[tuple[float, int]]] = {}
    for (index, centre), label in zip(windows, labels.tolist(), strict=True):
        by_region.setdefault(index, []).append((centre, int(label)))
    centres = np.array([centre for _, centre in windows])
    turns: list[SpeakerTurn] = []
    for index, (start, end) in enumerate(regions):
        begin, finish = start / SAMPLE_RATE, end / SAMPLE_RATE
        own = by_region.get(index)
        if own is None:
            nearest = int(np.argmin(np.abs(centres - (begin + finish) / 2)))
            own = [((begin + finish) / 2, int(labels[nearest]))]
        cut = begin
        for i, (centre, label) in enumerate(own):
            until = finish if i + 1 == len(own) else (centre + own[i + 1][0]) / 2
            if turns and turns[-1].speaker == label and abs(turns[-1].end - cut) < 1e-3:
                turns[-1] = SpeakerTurn(turns[-1].start, round(until, 3), label)
            else:
                turns.append(SpeakerTurn(round(cut, 3), round(until, 3), label))
            cut = until
    return turns
