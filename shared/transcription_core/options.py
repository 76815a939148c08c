"""Job options: what a client may ask of a transcription beside its media, and what the
served model can do. Pure: no I/O.

A job's options are columns of ``jobs`` (``Job.task``, ``Job.word_timestamps``, ...),
fixed at enqueue and never changed, so every attempt of a job decodes with the same ones.
:class:`DecodeOptions` is the part of them that shapes a chunk's result; each saved chunk
records its :meth:`~DecodeOptions.key`, and a retried job reuses a saved chunk only if the
key is the same.

What the model can do is known from its name, the ``MODEL`` setting the enqueue service
shares with the model server: a model whose name ends in ``.en`` (``tiny.en``, or a
directory such as ``/models/medium.en``) is English-only; it neither translates nor
transcribes another language (:func:`capability_problem`).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath


class Task(enum.StrEnum):
    """What the model does with the speech: write it down, or translate it to English."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


#: Whisper's language codes (faster-whisper's ``tokenizer._LANGUAGE_CODES``; a unit test
#: checks the two agree). Kept here so the enqueue service validates without the model.
WHISPER_LANGUAGES: frozenset[str] = frozenset(
    """af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha
    haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr
    ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th
    tk tl tr tt uk ur uz vi yi yo zh yue""".split()
)

#: The ``language`` a client sends to ask for detection, as ``null`` does.
AUTO_LANGUAGE = "auto"


def normalize_language(value: str | None) -> str | None:
    """The Whisper code of a requested language: ``None`` (or ``"auto"``) means detect;
    case is ignored and a region is dropped (``en-US`` is ``en``). Raises ValueError for
    a language Whisper does not know."""
    if value is None or value.strip().lower() in ("", AUTO_LANGUAGE):
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    if code not in WHISPER_LANGUAGES:
        raise ValueError(
            f"{value!r} is not a language Whisper knows: give an ISO 639-1 code such as "
            "'en' or 'de', or 'auto' (or null) to detect it"
        )
    return code


def english_only(model: str) -> bool:
    """Whether the model named ``model`` (``MODEL``) knows English only: its name, or its
    directory's, ends in ``.en``, as Whisper's English-only models are named."""
    return PurePosixPath(model.strip().rstrip("/")).name.lower().endswith(".en")


def capability_problem(
    model: str, task: Task, language: str | None, *, english: bool | None = None
) -> str | None:
    """Why the served ``model`` cannot do ``task`` in ``language``, or None if it can.
    ``english``: whether it is English-only, where that is known (the model server has
    the model); else it is judged by the name (:func:`english_only`)."""
    if not (english_only(model) if english is None else english):
        return None
    if task == Task.TRANSLATE:
        return (
            f"the served model {model} is English-only and cannot translate; "
            "a multilingual model (MODEL=base, or larger) can"
        )
    if language not in (None, "en"):
        return (
            f"the served model {model} is English-only and cannot transcribe {language!r}; "
            "a multilingual model (MODEL=base, or larger) can"
        )
    return None


@dataclass(frozen=True)
class DecodeOptions:
    """What a job asks of the model for every chunk: the options that shape a chunk's
    result (the language is decided per attempt, and saved with each chunk)."""

    task: Task = Task.TRANSCRIBE
    word_timestamps: bool = False
    prompt: str | None = None
    hotwords: str | None = None

    def key(self) -> str:
        """A short fingerprint of these options, saved with each chunk made with them."""
        encoded = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:16]
