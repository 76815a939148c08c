"""Synthetic long recordings with known text: espeak-ng voices, speeds and pauses.

Each :class:`Recipe` names a voice rotation, a speaking rate (words per minute, espeak-ng's
``-s``), pause lengths and a container. :func:`render` speaks the sentences of
:data:`SENTENCES` in turn (a different voice every ``turn`` sentences, like speakers taking
turns), resamples espeak-ng's 22.05 kHz output to 16 kHz mono with PyAV, puts the recipe's
pauses between sentences (taken in turn), and writes the container with PyAV: ``wav``
(PCM), ``mp3`` (LAME), ``m4a`` (AAC in MP4) or ``webm`` (Opus). The reference is the
sentences spoken, in order.

espeak-ng is a Debian package (``apt-get install -y espeak-ng``); ``make bench-long-eval``
installs it where it can. The text is plain prose without digits (espeak-ng and Whisper
write numbers differently) and is the project's own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000

SENTENCES = (
    "The meeting started late because the projector would not connect to the laptop.",
    "Everyone agreed that the new schedule was better than the old one.",
    "We should send the draft to the legal team before the end of the week.",
    "The weather in the mountains changed quickly, so the hikers turned back early.",
    "She opened the window and listened to the rain falling on the garden.",
    "Our customers want faster answers, clearer prices and fewer surprises.",
    "The library closes at noon on Saturdays and stays closed on Sundays.",
    "He forgot his umbrella on the train and got soaked on the way home.",
    "Please remember to water the plants while I am away on holiday.",
    "The report shows that sales grew in the north but fell in the south.",
    "A small dog barked at the delivery van until it drove away.",
    "The engineers replaced the broken pump and tested the whole system again.",
    "My grandmother bakes bread every morning and gives half of it to the neighbours.",
    "The river was too deep to cross, so we walked upstream to find a bridge.",
    "Nobody noticed that the clock in the hallway had stopped.",
    "The museum has a new exhibition about ships and the people who built them.",
    "If the server fails again, we will move the service to another region.",
    "The children painted a large map of the world on the classroom wall.",
    "After dinner they played cards and talked about their travels.",
    "The bridge will be closed for repairs during the summer months.",
    "She wrote a long letter to her brother, who lives on a farm far away.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Fresh vegetables from the market taste much better than frozen ones.",
    "The pilot announced that the plane would land a little earlier than planned.",
    "We need a simple plan that everyone can follow without a manual.",
    "The old house at the end of the street has been empty for years.",
    "A strong wind blew the leaves across the empty parking lot.",
    "The teacher asked the students to read the first chapter before class.",
    "He fixed the bicycle chain with a pair of pliers and some patience.",
    "The coffee machine in the office makes a terrible noise every morning.",
    "Most of the guests left before midnight, but a few stayed to help clean up.",
    "The company plans to open a second factory near the coast.",
    "Her favourite song reminds her of the summer she spent by the lake.",
    "The doctor said that a short walk every day would help him sleep.",
    "We watched the sun rise over the hills and then drove back to the city.",
    "The baker sold out of bread long before the shop was due to close.",
    "Please check the invoice carefully, because the last one had several mistakes.",
    "The cat sleeps on the warm stones in the garden all afternoon.",
    "A new road will connect the village to the motorway next spring.",
    "They built a tree house with wood left over from the old fence.",
    "The journalist asked the minister a question he did not want to answer.",
    "Snow covered the roofs and the streets were silent for the whole night.",
    "The recipe calls for butter, sugar, flour and a pinch of salt.",
    "Our team won the match after a long and difficult second half.",
    "The student forgot her password and had to ask for a new one.",
    "Birds gathered on the wires before flying south for the winter.",
    "The manager thanked everyone for their hard work during the busy season.",
    "The ferry leaves the harbour early in the morning and returns at sunset.",
)


@dataclass(frozen=True)
class Recipe:
    """One synthetic recording: who speaks, how fast, the pauses, the container."""

    name: str
    voices: tuple[str, ...]
    #: Words per minute (espeak-ng's ``-s``; its default is 175).
    speed: int
    #: Pauses between sentences, in turn (seconds).
    pauses_s: tuple[float, ...]
    container: str
    #: How many sentences (the corpus repeats from the start past its end).
    sentences: int
    #: Sentences each voice says before the next one takes over.
    turn: int = 3
    #: The corpus sentence this recording starts at (recipes differ in their text).
    first: int = 0


def require_espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SystemExit("espeak-ng is missing: apt-get install -y espeak-ng")
    return found


def _speak(espeak: str, text: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    wav = tmp / "sentence.wav"
    subprocess.run(
        [espeak, "-v", voice, "-s", str(speed), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    from faster_whisper import decode_audio

    audio: np.ndarray = decode_audio(str(wav), sampling_rate=SAMPLE_RATE)
    return audio


def render(recipe: Recipe) -> tuple[np.ndarray, str]:
    """The recipe's 16 kHz mono samples and the text spoken."""
    espeak = require_espeak()
    parts: list[np.ndarray] = []
    spoken: list[str] = []
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp_name:
        tmp = Path(tmp_name)
        for n in range(recipe.sentences):
            text = SENTENCES[(recipe.first + n) % len(SENTENCES)]
            voice = recipe.voices[(n // recipe.turn) % len(recipe.voices)]
            if parts:
                pause = recipe.pauses_s[(n - 1) % len(recipe.pauses_s)]
                parts.append(np.zeros(int(pause * SAMPLE_RATE), np.float32))
            parts.append(_speak(espeak, text, voice, recipe.speed, tmp))
            spoken.append(text)
    parts.append(np.zeros(SAMPLE_RATE // 2, np.float32))
    return np.concatenate(parts), " ".join(spoken)


#: container -> (PyAV format, codec, sample rate the codec is fed)
CONTAINERS = {
    "wav": ("wav", "pcm_s16le", 16_000),
    "flac": ("flac", "flac", 16_000),
    "mp3": ("mp3", "libmp3lame", 16_000),
    "m4a": ("ipod", "aac", 16_000),
    "webm": ("webm", "libopus", 48_000),
}


def write(samples: np.ndarray, dest: Path, container: str) -> Path:
    """Write 16 kHz mono ``samples`` to ``dest`` in ``container`` with PyAV."""
    fmt, codec, rate = CONTAINERS[container]
    pcm = (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    with av.open(str(dest), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        step = 16_000
        pts = 0
        for start in range(0, len(pcm) + 1, step):
            block = pcm[start : start + step]
            frames = []
            if len(block):
                frame = av.AudioFrame.from_ndarray(
                    block.reshape(1, -1), format="s16", layout="mono"
                )
                frame.sample_rate = SAMPLE_RATE
                frames = resampler.resample(frame)
            else:
                frames = resampler.resample(None)
            for f in frames:
                f.pts = pts
                pts += f.samples
                for packet in stream.encode(f):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest
