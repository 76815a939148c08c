"""Requests and responses of the model server's HTTP API (``/v1/predict`` answers with
:class:`transcription_core.predict.PredictResponse`, which its client reads too)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from model_server.decoding import LANGUAGE_CODES
from transcription_core.audio.context import MAX_CONTEXT_CHARS, parse_context


def _language(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None  # omitted (or empty): detect
    code = value.strip().lower()
    if code not in LANGUAGE_CODES:
        raise ValueError(f"{value!r} is not a Whisper language code (such as 'en' or 'de')")
    return code


class PredictParams(BaseModel):
    """Query parameters of ``POST /v1/predict``."""

    language: str | None = Field(
        None, description="Language code of the speech (`en`, `de`, ...); omit to detect it."
    )
    beam_size: int = Field(5, ge=1, le=20, description="Beam width of the search.")
    word_timestamps: bool = Field(False, description="Also return each word with its times.")
    initial_prompt: str | None = Field(
        None, max_length=4000, description="Text that conditions the first window."
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="`translate`: English text (a multilingual model only)."
    )
    hotwords: str | None = Field(
        None, max_length=4000, description="Words to expect, given before every window."
    )
    context: str | None = Field(
        None,
        max_length=MAX_CONTEXT_CHARS,
        description="What was heard just before this chunk, as Whisper's timestamped "
        "segments: `<|0.00|> Text.<|4.20|><|5.00|> More.<|8.10|>` (times 0 to 30 s). The "
        "first window is conditioned on it as on the previous window's output (after "
        "`initial_prompt`), as `transcribe()` conditions each window on the one before.",
    )

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        return _language(value)

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: str | None) -> str | None:
        if value is not None:
            parse_context(value)  # its ValueError is the 422's reason
        return value

    def context_segments(self) -> tuple[tuple[float, float, str], ...]:
        return tuple(parse_context(self.context)) if self.context else ()


# -- OpenAI's /v1/audio/transcriptions -------------------------------------------------

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["segment", "word"]


def validate_language(value: str | None) -> str | None:
    return _language(value)


class TranscriptionJson(BaseModel):
    text: str


class VerboseSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class VerboseWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    words: list[VerboseWord] | None = None


class ModelCard(BaseModel):
    """One model of ``GET /v1/models`` (OpenAI's shape)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "transcription-service"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
