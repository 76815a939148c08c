"""Request and response bodies of the client API."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticSerializationError

from transcription_core.options import normalize_language
from transcription_core.schemas import JobResource
from transcription_core.storable import StorableText


class JobCreate(BaseModel):
    """``POST /v1/jobs``. Unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", strict=True)

    media_url: StorableText = Field(
        max_length=8192, description="Presigned http(s) URL of the media."
    )
    webhook_url: StorableText = Field(max_length=2048, description="Where the result is POSTed.")
    external_id: StorableText | None = Field(
        None, max_length=256, description="The client's own id."
    )
    language: str | None = Field(
        None,
        min_length=2,
        max_length=16,
        pattern=r"^[A-Za-z]{2,4}([-_][A-Za-z0-9]+)?$",
        description="A language Whisper knows, as its ISO 639-1 code such as `en` or `de` "
        "(a region is dropped: `en-US` is stored as `en`); `auto` or null means detect. "
        "An English-only model (`.en`) takes `en` or detection only.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Echoed back; at most 16 KiB as compact JSON and 32 levels deep, "
        "finite numbers only.",
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe",
        description="`translate`: the transcript in English, whatever the language spoken "
        "(a multilingual model only).",
    )
    word_timestamps: bool = Field(
        False, description="Each segment carries its words with their times and probability."
    )
    prompt: StorableText | None = Field(
        None,
        max_length=4000,
        description="Text given to the model before every chunk (Whisper's initial prompt): "
        "the spelling of names, the style of punctuation. At most MAX_PROMPT_CHARS.",
    )
    hotwords: StorableText | None = Field(
        None,
        max_length=4000,
        description="Words the model should expect (vocabulary, product names), given to it "
        "before every chunk. At most MAX_PROMPT_CHARS.",
    )
    multichannel: bool = Field(
        False,
        description="Each audio channel transcribed on its own; segments carry `channel` "
        "(0 first) and are merged by time. Costs one transcription per channel.",
    )

    diarize: bool = Field(
        False,
        description="Label each segment (and word) with its `speaker`, numbered 0, 1, ... in "
        "order of first speech. Refused (422) where the deployment has no diarization "
        "(DIARIZATION=false), and with `multichannel`.",
    )
    speakers: int | None = Field(
        None, ge=1, le=32, description="With `diarize`: how many speakers there are."
    )
    min_speakers: int | None = Field(
        None, ge=1, le=32, description="With `diarize`: the fewest speakers to find."
    )
    max_speakers: int | None = Field(
        None,
        ge=1,
        le=32,
        description="With `diarize`: the most speakers to find (and at most DIARIZE_MAX_SPEAKERS).",
    )

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return normalize_language(value)

    def canonical_json(self) -> str:
        """The request as compared for an idempotent replay. An option left at its default
        is left out, so a request's hash is the one it had before the options existed."""
        fields = self.model_dump()
        for name in _OPTIONS:
            if fields[name] == type(self).model_fields[name].default:
                del fields[name]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


#: The options added by issue 15 (``transcription_core.options``).
_OPTIONS = (
    "task",
    "word_timestamps",
    "prompt",
    "hotwords",
    "multichannel",
    "diarize",
    "speakers",
    "min_speakers",
    "max_speakers",
)


class JobPage(BaseModel):
    jobs: list[JobResource]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )

    def to_json(self) -> str:
        """The page as JSON, whatever the depth of a job's ``metadata``."""
        try:
            return self.model_dump_json()
        except PydanticSerializationError:
            jobs = ",".join(job.to_json() for job in self.jobs)
            return f'{{"jobs":[{jobs}],"next_cursor":{json.dumps(self.next_cursor)}}}'


TranscriptFormat = Literal["json", "text", "srt", "vtt"]
