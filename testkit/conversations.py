"""Conversations with known turns, built from the real voices of ``tests/data``, and the
diarization error rate (DER) of a system's speaker turns against them.

Five real speakers: the reader of ``multilingual.mp3`` (its English half), J. F. Kennedy
(``jfk.flac``), the left and the right voice of ``stereo_diarization.wav``, and the
speaker of ``hotwords.mp3``. Each recording is cut into utterances where Silero VAD
(faster-whisper's) hears a pause, and a conversation takes the speakers' utterances in
turn with short silences between them. A *synthetic* voice is a real one resampled (its
pitch and tempo shifted together, as a tape played faster or slower).

The reference of a conversation is where each utterance's speech lies (the VAD's
regions, not the silences inside an utterance) and who says it. Turns never overlap.

DER (:func:`der`) is scored on 10 ms frames: missed speech, false alarm and speaker
confusion over the reference's speech, with the system's speakers mapped one to one onto
the reference's so as to agree most (the Hungarian method), and ``collar`` seconds either
side of each reference turn's start and end not scored (0.25 s, as is customary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from testkit.data import DATA

SAMPLE_RATE = 16_000
FRAME_S = 0.01

#: The real voices: a name, and the recording (and channel, or span) it comes from.
VOICES = ("mit-reader", "jfk", "left", "right", "hotwords")


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Conversation:
    name: str
    audio: np.ndarray  # 16 kHz mono float32
    turns: list[Turn]  # the reference: speech regions and their speaker, in order

    @property
    def speakers(self) -> list[str]:
        """The reference's speakers, in order of first speech."""
        return list(dict.fromkeys(t.speaker for t in self.turns))

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def voice_audio(name: str) -> np.ndarray:
    """One real voice's recording, 16 kHz mono float32."""
    from faster_whisper import decode_audio

    if name == "mit-reader":
        return np.asarray(decode_audio(str(DATA / "multilingual.mp3"))[: 30 * SAMPLE_RATE])
    if name == "jfk":
        return np.asarray(decode_audio(str(DATA / "jfk.flac")))
    if name in ("left", "right"):
        left, right = decode_audio(str(DATA / "stereo_diarization.wav"), split_stereo=True)
        return np.asarray(left if name == "left" else right)
    if name == "hotwords":
        return np.asarray(decode_audio(str(DATA / "hotwords.mp3")))
    raise ValueError(f"no voice {name!r}; one of {VOICES}")


def shifted_voice(audio: np.ndarray, factor: float) -> np.ndarray:
    """``audio`` played ``factor`` times as fast: pitch and tempo raised (factor > 1) or
    lowered together; a different voice to a listener and to a speaker model."""
    length = int(len(audio) / factor)
    positions = np.arange(length, dtype=np.float64) * factor
    return np.asarray(np.interp(positions, np.arange(len(audio)), audio), dtype=np.float32)


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray
    #: Its speech regions, in seconds from its own start.
    speech: list[tuple[float, float]]


def utterances(audio: np.ndarray, *, min_pause_s: float = 0.2) -> list[Utterance]:
    """``audio`` cut at the pauses Silero VAD hears (at least ``min_pause_s``): each
    utterance from its first speech to its last, with its speech regions."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(min_pause_s * 1000), speech_pad_ms=30)
    regions = get_speech_timestamps(audio, options)
    out = []
    for region in regions:
        start, end = region["start"], region["end"]
        out.append(Utterance(audio[start:end], [(0.0, (end - start) / SAMPLE_RATE)]))
    return out


def converse(
    name: str,
    voices: Sequence[tuple[str, np.ndarray]],
    *,
    gaps_s: Sequence[float] = (0.4, 0.8, 0.3, 1.2, 0.6),
    max_turns: int | None = None,
    rounds: int = 1,
) -> Conversation:
    """The voices' utterances in turn (a round robin over the speakers, each taking its
    next utterance, until all are used ``rounds`` times or ``max_turns`` is reached),
    silences from ``gaps_s`` between them, 0.5 s before the first and after the last."""
    queues = [(speaker, utterances(audio) * rounds) for speaker, audio in voices]
    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    position = len(parts[0])
    turns: list[Turn] = []
    gap = 0
    while any(q for _, q in queues) and (max_turns is None or len(turns) < max_turns):
        for speaker, queue in queues:
            if not queue or (max_turns is not None and len(turns) >= max_turns):
                continue
            utt = queue.pop(0)
            if len(turns) > 0:
                silence = np.zeros(int(gaps_s[gap % len(gaps_s)] * SAMPLE_RATE), np.float32)
                gap += 1
                parts.append(silence)
                position += len(silence)
            at = position / SAMPLE_RATE
            for start, end in utt.speech:
                turns.append(Turn(round(at + start, 3), round(at + end, 3), speaker))
            parts.append(utt.audio.astype(np.float32))
            position += len(utt.audio)
    parts.append(np.zeros(int(0.5 * SAMPLE_RATE), np.float32))
    return Conversation(name, np.concatenate(parts), _merge(turns))


def _merge(turns: list[Turn]) -> list[Turn]:
    """Consecutive turns of one speaker with no one between them stay separate turns (the
    pause between them is silence in the reference); only touching ones are joined."""
    out: list[Turn] = []
    for turn in turns:
        if out and out[-1].speaker == turn.speaker and turn.start - out[-1].end < 1e-6:
            out[-1] = Turn(out[-1].start, turn.end, turn.speaker)
        else:
            out.append(turn)
    return out


def real_voice_conversations() -> list[Conversation]:
    """The conversations of the benchmark and the tests, of real voices: two, three and
    all five speakers."""
    audio = {name: voice_audio(name) for name in VOICES}
    return [
        converse("2 voices: jfk, mit-reader", [(v, audio[v]) for v in ("jfk", "mit-reader")]),
        converse(
            "3 voices: hotwords, left, jfk",
            [(v, audio[v]) for v in ("hotwords", "left", "jfk")],
            rounds=2,
        ),
        converse("5 voices", [(v, audio[v]) for v in VOICES], rounds=1),
    ]


def synthetic_conversations() -> list[Conversation]:
    """Conversations of synthetic voices: real voices resampled (x0.85, x1.18), so that
    one speaker's recording gives two or three voices."""
    jfk = voice_audio("jfk")
    mit = voice_audio("mit-reader")
    return [
        converse(
            "synthetic 3 voices: jfk, jfk x1.18, jfk x0.85",
            [
                ("jfk", jfk),
                ("jfk x1.18", shifted_voice(jfk, 1.18)),
                ("jfk x0.85", shifted_voice(jfk, 0.85)),
            ],
        ),
        converse(
            "synthetic 4 voices: mit, mit x1.18, jfk, jfk x0.85",
            [
                ("mit", mit),
                ("mit x1.18", shifted_voice(mit, 1.18)),
                ("jfk", jfk),
                ("jfk x0.85", shifted_voice(jfk, 0.85)),
            ],
            max_turns=24,
        ),
    ]


def _frames(turns: Sequence[Turn], labels: dict[str, int], n: int) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)
    for turn in turns:
        out[round(turn.start / FRAME_S) : round(turn.end / FRAME_S)] = labels[turn.speaker]
    return out


@dataclass(frozen=True)
class Score:
    der: float
    missed: float
    false_alarm: float
    confusion: float
    scored_s: float


def der(reference: Sequence[Turn], hypothesis: Sequence[Turn], *, collar: float = 0.25) -> Score:
    """The diarization error rate of ``hypothesis`` against ``reference`` (see the module)."""
    end = max([t.end for t in reference] + [t.end for t in hypothesis] + [0.0])
    n = round(end / FRAME_S) + 1
    ref_names = list(dict.fromkeys(t.speaker for t in reference))
    hyp_names = list(dict.fromkeys(t.speaker for t in hypothesis))
    ref = _frames(reference, {s: i for i, s in enumerate(ref_names)}, n)
    hyp = _frames(hypothesis, {s: i for i, s in enumerate(hyp_names)}, n)
    scored = np.ones(n, dtype=bool)
    reach = round(collar / FRAME_S)
    for turn in reference:
        for edge in (turn.start, turn.end):
            at = round(edge / FRAME_S)
            scored[max(0, at - reach) : at + reach] = False
    ref, hyp = ref[scored], hyp[scored]
    speech = ref >= 0
    missed = int(np.sum(speech & (hyp < 0)))
    false_alarm = int(np.sum(~speech & (hyp >= 0)))
    both = speech & (hyp >= 0)
    agree = np.zeros((len(ref_names), max(1, len(hyp_names))), dtype=np.int64)
    np.add.at(agree, (ref[both], hyp[both]), 1)
    matched = _best_matching(agree)
    confusion = int(np.sum(both)) - matched
    total = max(1, int(np.sum(speech)))
    return Score(
        der=(missed + false_alarm + confusion) / total,
        missed=missed / total,
        false_alarm=false_alarm / total,
        confusion=confusion / total,
        scored_s=total * FRAME_S,
    )


def _best_matching(agree: np.ndarray) -> int:
    """The most frames a one-to-one mapping of system speakers onto reference ones agrees
    on (scipy's Hungarian method where installed, else every mapping of a few)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        rows, cols = agree.shape
        if rows <= cols:
            return max(
                sum(int(agree[r, c]) for r, c in enumerate(p))
                for p in permutations(range(cols), rows)
            )
        return max(
            sum(int(agree[r, c]) for c, r in enumerate(p)) for p in permutations(range(rows), cols)
        )
    r, c = linear_sum_assignment(-agree)
    return int(agree[r, c].sum())
