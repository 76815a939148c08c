"""Request and response bodies of the client API."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

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
        pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$",
        description="ISO 639-1 code such as `en`; null means detect.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Echoed back; at most 16 KiB as compact JSON and 32 levels deep, "
        "finite numbers only.",
    )

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))


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
